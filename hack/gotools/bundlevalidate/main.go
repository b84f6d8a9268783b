// Command bundlevalidate checks an OLM bundle folder (manifests/ and metadata/) with the
// operator framework's own validation library, github.com/operator-framework/api: the
// bundle is loaded by pkg/manifests as OLM's tooling loads it, then checked by the
// library's default bundle validators (CSV, CRDs, the bundle: owned CRDs present, service
// accounts, size, related images) and by those OperatorHub applies (OperatorHub v2, good
// practices, removed APIs for the given Kubernetes version, standard categories and
// capabilities). The library does not look at the CSV's spec and status descriptors (as of
// v0.45.0 no validator reads them), so this program adds one check of its own, reported
// with type DescriptorPathNotInCRD: each descriptor's path must name a field of the owned
// CRD's schema (what the console would otherwise show as an empty field).
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
	"strings"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	verrors "github.com/operator-framework/api/pkg/validation/errors"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// missingField is the first segment of path that the schema under root lacks ("" if none).
func missingField(schema *apiextensionsv1.JSONSchemaProps, root, path string) string {
	node, ok := schema.Properties[root]
	if !ok {
		return root
	}
	for _, part := range strings.Split(path, ".") {
		next, ok := node.Properties[part]
		if !ok {
			return part
		}
		node = next
	}
	return ""
}

// descriptorFindings checks every owned CRD's descriptor paths against the bundle's CRDs.
func descriptorFindings(bundle *manifests.Bundle) []verrors.Error {
	schemas := map[string]*apiextensionsv1.JSONSchemaProps{}
	for _, crd := range bundle.V1CRDs {
		for _, v := range crd.Spec.Versions {
			if v.Schema != nil && v.Schema.OpenAPIV3Schema != nil {
				schemas[crd.Name+"/"+v.Name] = v.Schema.OpenAPIV3Schema
			}
		}
	}
	var found []verrors.Error
	for _, owned := range bundle.CSV.Spec.CustomResourceDefinitions.Owned {
		schema, ok := schemas[owned.Name+"/"+owned.Version]
		if !ok {
			continue // the library reports an owned CRD missing from the bundle
		}
		check := func(root, path string) {
			if part := missingField(schema, root, path); part != "" {
				found = append(found, verrors.Error{
					Type: "DescriptorPathNotInCRD", Level: verrors.LevelError,
					Field:    fmt.Sprintf("spec.customresourcedefinitions.owned[%s].%sDescriptors", owned.Name, root),
					BadValue: path,
					Detail: fmt.Sprintf("%s descriptor path %q: the CRD's %s schema has no field %q",
						owned.Kind, path, root, part)})
			}
		}
		for _, d := range owned.SpecDescriptors {
			check("spec", d.Path)
		}
		for _, d := range owned.StatusDescriptors {
			check("status", d.Path)
		}
	}
	return found
}

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
	for _, e := range descriptorFindings(bundle) {
		failed = true
		emit(bundle.CSV.GetName(), e)
	}
	if failed {
		os.Exit(1)
	}
}
