from omh_consolidator.app import main

main()
