// kubevalidate decodes Kubernetes objects strictly against the API types, offline.
//
// It reads YAML documents (the output of `kubectl kustomize`) from the files named on the command
// line, or from standard input, and decodes each one with client-go's scheme plus the
// prometheus-operator types (PodMonitor, PrometheusRule). Strict decoding refuses an unknown or
// duplicated field, a value of the wrong type and a kind the scheme does not know: the mistakes a
// schema validation catches, without the schema download that needs a network.
//
// One line per object on standard output ("ok Kind/name" or "error Kind/name: why"); the exit
// code is 1 if any object failed, 2 if the input could not be read.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"
)

func main() {
	types := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{scheme.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(types); err != nil {
			fmt.Fprintf(os.Stderr, "kubevalidate: building the scheme: %v\n", err)
			os.Exit(2)
		}
	}
	decoder := serializer.NewCodecFactory(types, serializer.EnableStrict).UniversalDeserializer()

	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	failed := 0
	for _, name := range inputs {
		n, err := validate(name, decoder)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubevalidate: %s: %v\n", name, err)
			os.Exit(2)
		}
		failed += n
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// validate decodes every document of one input; it returns how many failed.
func validate(name string, decoder runtime.Decoder) (int, error) {
	var in io.Reader = os.Stdin
	if name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return 0, err
		}
		defer file.Close()
		in = file
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	failed := 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			return failed, nil
		}
		if err != nil {
			return failed, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if msg := check(doc, decoder); msg != "" {
			fmt.Println(msg)
			if msg[:2] != "ok" {
				failed++
			}
		}
	}
}

// check decodes one document strictly: "ok Kind/name", or "error Kind/name: why".
func check(doc []byte, decoder runtime.Decoder) string {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = sigsyaml.Unmarshal(doc, &head)
	what := fmt.Sprintf("%s/%s", head.Kind, head.Metadata.Name)
	obj, _, err := decoder.Decode(doc, nil, nil)
	if err != nil {
		return fmt.Sprintf("error %s: %v", what, err)
	}
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return fmt.Sprintf("error %s: no object metadata: %v", what, err)
	}
	if accessor.GetName() == "" {
		return fmt.Sprintf("error %s: metadata.name is empty", what)
	}
	return "ok " + what
}
