// Command bundlevalidate checks an OLM bundle folder (manifests/ and metadata/) with the
// operator framework's own validation library, github.com/operator-framework/api: the
// bundle is loaded by pkg/manifests as OLM's tooling loads it, then checked by the
// library's default bundle validators (CSV, CRDs, the bundle: owned CRDs present, service
// accounts, size, related images) and by those OperatorHub applies (OperatorHub v2, good
// practices, removed APIs for the given Kubernetes version, standard categories and
// capabilities).
//
// Usage: bundlevalidate [-k8s-version 1.36] DIR
//
// Output: one JSON object per finding, {"level", "type", "field", "value", "detail",
// "text", "object"} (text: the library's own message); exit 0 when nothing is an error,
// 1 when something is, 2 when the folder cannot be loaded as a bundle.
// guestha builds it from this file through hack/testbed/build.py; it is never imported.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	verrors "github.com/operator-framework/api/pkg/validation/errors"
)

type finding struct {
	Level  string `json:"level"`
	Type   string `json:"type"`
	Field  string `json:"field,omitempty"`
	Value  string `json:"value,omitempty"`
	Detail string `json:"detail,omitempty"`
	Text   string `json:"text"`
	Object string `json:"object"`
}

func emit(object string, e verrors.Error) {
	f := finding{Level: string(e.Level), Type: string(e.Type), Field: e.Field,
		Detail: e.Detail, Text: e.Error(), Object: object}
	if e.BadValue != nil {
		f.Value = fmt.Sprintf("%v", e.BadValue)
	}
	out, _ := json.Marshal(f)
	fmt.Println(string(out))
}

func main() {
	k8sVersion := flag.String("k8s-version", "", "the Kubernetes version to check removed APIs against")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: bundlevalidate [-k8s-version X.Y] DIR")
		os.Exit(2)
	}
	bundle, err := manifests.GetBundleFromDir(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundlevalidate: cannot load the bundle:", err)
		os.Exit(2)
	}
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.GoodPracticesValidator,
		validation.AlphaDeprecatedAPIsValidator,
		validation.StandardCategoriesValidator,
		validation.StandardCapabilitiesValidator,
	)
	objects := append(bundle.ObjectsToValidate(), map[string]string{"k8s-version": *k8sVersion})
	failed := false
	for _, result := range validators.Validate(objects...) {
		for _, e := range result.Errors {
			failed = true
			emit(result.Name, e)
		}
		for _, e := range result.Warnings {
			emit(result.Name, e)
		}
	}
	if failed {
		os.Exit(1)
	}
}
