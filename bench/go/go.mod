module cloud4iot/bench

go 1.22
