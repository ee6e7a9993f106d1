// Istio's sample applications: the manifests of samples/curl and
// samples/httpbin, text unchanged, from the istio.io/istio module (served
// only as a pseudo-version; nothing of it is built), and go-httpbin, the
// program of the httpbin sample's image (mccutchen/go-httpbin:v2.15.0,
// the version the sample names), built from its published module.
// istio.io/istio is required for its files only: do not `go mod tidy`
// here, it would drop it.
module ambient-mesh.dev/cluster/samples

go 1.26.0

tool github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin

require (
	github.com/mccutchen/go-httpbin/v2 v2.15.0 // indirect
	istio.io/istio v0.0.0-20260827124520-eed52ebb66ad // indirect
)
