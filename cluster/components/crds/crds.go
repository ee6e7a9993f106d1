// Package crds names the modules whose CRD YAML the cluster installs, so
// that go mod tidy keeps them required.
package crds

import (
	_ "istio.io/api/networking/v1"
	_ "sigs.k8s.io/gateway-api/apis/v1"
)
