// The wrapper module that builds Knative Eventing v0.12.0 (what Kyma 1.11-1.20 ran): build-v012.sh.
//
// knative.dev/eventing@v0.12.0 predates Go modules (dep: Gopkg.lock, no go.mod, no vendor/ in the
// module zip), so every dependency is pinned here by hand from its Gopkg.lock, as versions the Go
// module proxy serves (it refuses bare revisions). Replaces, not requires, so that no newer
// version of these modules is ever selected by another module's go.mod.
module example.com/knative-envtest-v012

go 1.26.0

require knative.dev/eventing v0.12.0

require (
	cloud.google.com/go v0.45.1 // indirect
	contrib.go.opencensus.io/exporter/ocagent v0.4.12 // indirect
	contrib.go.opencensus.io/exporter/prometheus v0.1.0 // indirect
	contrib.go.opencensus.io/exporter/stackdriver v0.0.0-00010101000000-000000000000 // indirect
	contrib.go.opencensus.io/exporter/zipkin v0.0.0-00010101000000-000000000000 // indirect
	github.com/aws/aws-sdk-go v1.23.20 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/census-instrumentation/opencensus-proto v0.2.1 // indirect
	github.com/cloudevents/sdk-go v0.11.0 // indirect
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/evanphx/json-patch v4.2.0+incompatible // indirect
	github.com/gogo/protobuf v1.2.2-0.20190723190241-65acae22fc9d // indirect
	github.com/golang/groupcache v0.0.0-20190702054246-869f871628b6 // indirect
	github.com/golang/protobuf v1.3.2 // indirect
	github.com/google/go-cmp v0.6.0 // indirect
	github.com/google/gofuzz v1.0.0 // indirect
	github.com/google/uuid v1.1.1 // indirect
	github.com/googleapis/gax-go/v2 v2.0.5 // indirect
	github.com/googleapis/gnostic v0.0.0-20170729233727-0c5108395e2d // indirect
	github.com/grpc-ecosystem/grpc-gateway v1.9.4 // indirect
	github.com/hashicorp/golang-lru v0.5.1 // indirect
	github.com/imdario/mergo v0.3.5 // indirect
	github.com/jmespath/go-jmespath v0.0.0-20180206201540-c2b33e8439af // indirect
	github.com/json-iterator/go v1.1.7 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/mattbaird/jsonpatch v0.0.0-00010101000000-000000000000 // indirect
	github.com/matttproud/golang_protobuf_extensions v1.0.1 // indirect
	github.com/modern-go/concurrent v0.0.0-20180306012644-bacd9c7ef1dd // indirect
	github.com/modern-go/reflect2 v1.0.1 // indirect
	github.com/openzipkin/zipkin-go v0.4.3 // indirect
	github.com/pkg/errors v0.8.1 // indirect
	github.com/prometheus/client_golang v1.0.0 // indirect
	github.com/prometheus/client_model v0.0.0-20190812154241-14fe0d1b01d4 // indirect
	github.com/prometheus/common v0.6.0 // indirect
	github.com/prometheus/procfs v0.0.3 // indirect
	github.com/robfig/cron v0.0.0-00010101000000-000000000000 // indirect
	github.com/rogpeppe/go-internal v1.16.0 // indirect
	github.com/spf13/pflag v1.0.3 // indirect
	go.opencensus.io v0.22.1 // indirect
	go.uber.org/atomic v1.4.0 // indirect
	go.uber.org/multierr v1.1.0 // indirect
	go.uber.org/zap v1.10.0 // indirect
	golang.org/x/crypto v0.22.0 // indirect
	golang.org/x/mod v0.21.0 // indirect
	golang.org/x/net v0.24.0 // indirect
	golang.org/x/oauth2 v0.0.0-20190604053449-0f29369cfe45 // indirect
	golang.org/x/sync v0.0.0-20190911185100-cd5d95a43a6e // indirect
	golang.org/x/sys v0.26.0 // indirect
	golang.org/x/term v0.19.0 // indirect
	golang.org/x/text v0.14.0 // indirect
	golang.org/x/time v0.0.0-20190308202827-9d24e82272b4 // indirect
	google.golang.org/api v0.15.0 // indirect
	google.golang.org/appengine v1.6.2 // indirect
	google.golang.org/genproto v0.0.0-20190911173649-1774047e7e51 // indirect
	google.golang.org/grpc v1.63.2 // indirect
	gopkg.in/inf.v0 v0.9.0 // indirect
	gopkg.in/yaml.v2 v2.2.4 // indirect
	k8s.io/api v0.16.4 // indirect
	k8s.io/apiextensions-apiserver v0.0.0-00010101000000-000000000000 // indirect
	k8s.io/apimachinery v0.16.4 // indirect
	k8s.io/client-go v0.16.4 // indirect
	k8s.io/klog v0.4.0 // indirect
	k8s.io/kube-openapi v0.0.0-20190816220812-743ec37842bf // indirect
	k8s.io/utils v0.0.0-20190801114015-581e00157fb1 // indirect
	knative.dev/pkg v0.0.0-20200113182502-b8dc5fbc6d2f // indirect; release-0.12, the pin Kyma 1.x used
	sigs.k8s.io/yaml v1.1.0 // indirect
)

replace (
	contrib.go.opencensus.io/exporter/ocagent => contrib.go.opencensus.io/exporter/ocagent v0.6.0
	contrib.go.opencensus.io/exporter/prometheus => contrib.go.opencensus.io/exporter/prometheus v0.1.0
	contrib.go.opencensus.io/exporter/stackdriver => contrib.go.opencensus.io/exporter/stackdriver v0.12.9
	contrib.go.opencensus.io/exporter/zipkin => contrib.go.opencensus.io/exporter/zipkin v0.1.1

	github.com/evanphx/json-patch => github.com/evanphx/json-patch v4.5.0+incompatible

	github.com/golang/protobuf => github.com/golang/protobuf v1.3.2
	github.com/googleapis/gnostic => github.com/googleapis/gnostic v0.3.1
	github.com/json-iterator/go => github.com/json-iterator/go v1.1.9
	github.com/mattbaird/jsonpatch => github.com/mattbaird/jsonpatch v0.0.0-20171005235357-81af80346b1a
	// 1.0.1 (Gopkg.lock) panics at start on Go >= 1.18.
	github.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.2
	github.com/prometheus/client_golang => github.com/prometheus/client_golang v1.1.0
	github.com/robfig/cron => github.com/robfig/cron v1.2.0

	// v0.22.1 with Span.SetSpanID added: knative.dev/eventing@v0.12.0 hack/set-span-id.patch,
	// which its hack/update-deps.sh applies to the vendored copy. build-v012.sh makes this
	// folder (a copy of the module, patched) next to a copy of this go.mod; it is not committed.
	go.opencensus.io => ./third_party/opencensus
	google.golang.org/grpc => google.golang.org/grpc v1.26.0
	gopkg.in/yaml.v2 => gopkg.in/yaml.v2 v2.2.4
	// Gopkg.lock: kubernetes-1.16.4.
	k8s.io/api => k8s.io/api v0.16.4
	k8s.io/apiextensions-apiserver => k8s.io/apiextensions-apiserver v0.16.4
	k8s.io/apimachinery => k8s.io/apimachinery v0.16.4
	k8s.io/apiserver => k8s.io/apiserver v0.16.4
	k8s.io/client-go => k8s.io/client-go v0.16.4
	k8s.io/code-generator => k8s.io/code-generator v0.16.4
	k8s.io/klog => k8s.io/klog v1.0.0
	// What client-go v0.16.4 requires (the Gopkg.lock revisions are not served by the proxy).
	k8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-20190816220812-743ec37842bf
	k8s.io/utils => k8s.io/utils v0.0.0-20190801114015-581e00157fb1
)
