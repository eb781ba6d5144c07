// kubectl from k8s.io/kubectl at the devcluster apiserver's version (v0.36.3 = 1.36.3),
// so tests/install applies the manifests with a client inside the supported skew.
// The same main as k8s.io/kubernetes/cmd/kubectl.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
