// Command kstatus reads one `kubectl get -o json` List and judges every item with
// sigs.k8s.io/cli-utils' kstatus (status.Compute), the per-object judgement Kubernetes tools
// use; it prints how many objects got each status, then the seconds spent reading and
// decoding the file and in Compute. benchmarks/bench_check.py times it as a whole process
// against `eventmesh-health check` on the same file. JSON only: kstatus itself takes
// unstructured objects, reading YAML is not its job.
//
//	kstatus FILE.json
package main

import (
	"fmt"
	"os"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kstatus FILE.json  (a kubectl get -o json List)")
		os.Exit(2)
	}
	start := time.Now()
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	// decoded as kubectl does (UnstructuredJSONScheme): integers stay int64, which kstatus'
	// generation checks need (plain encoding/json would give float64 and fail them)
	var list unstructured.UnstructuredList
	if err := list.UnmarshalJSON(data); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: not a JSON List:", err)
		os.Exit(1)
	}
	data = nil
	decoded := time.Now()
	counts := map[string]int{}
	for i := range list.Items {
		result, err := status.Compute(&list.Items[i])
		if err != nil {
			counts["error"]++
			continue
		}
		counts[string(result.Status)]++
	}
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	computed := time.Now()
	fmt.Printf("%d objects\n", len(list.Items))
	for _, name := range names {
		fmt.Printf("%s\t%d\n", name, counts[name])
	}
	fmt.Printf("read+decode %.2fs, Compute %.2fs\n",
		decoded.Sub(start).Seconds(), computed.Sub(decoded).Seconds())
}
