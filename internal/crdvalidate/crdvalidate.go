// Package crdvalidate checks custom resources against their
// CustomResourceDefinitions outside an API server, with the API server's own
// code (k8s.io/apiextensions-apiserver): unknown fields are reported, defaults
// are applied, then the OpenAPI schema and the CEL rules are evaluated. The
// agent's standalone mode uses it so that a manifest is accepted or refused
// with the same message in a file as by kubectl apply.
package crdvalidate

import (
	"context"
	"fmt"
	"io/fs"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// Validator validates objects of the kinds of a set of CRDs.
type Validator struct {
	kinds map[string]*kindSchema // "apiVersion kind"
}

type kindSchema struct {
	structural *structuralschema.Structural
	openapi    validation.SchemaValidator
	cel        *cel.Validator
}

// New reads the CRD YAML files from fsys and prepares a validator for every
// served version. Errors: unreadable files, CRDs whose schema is not
// structural.
func New(fsys fs.FS, files ...string) (*Validator, error) {
	v := &Validator{kinds: map[string]*kindSchema{}}
	for _, name := range files {
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, ver := range crd.Spec.Versions {
			if !ver.Served || ver.Schema == nil || ver.Schema.OpenAPIV3Schema == nil {
				continue
			}
			var internal apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(ver.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
				return nil, fmt.Errorf("%s %s: convert schema: %w", name, ver.Name, err)
			}
			s, err := structuralschema.NewStructural(&internal)
			if err != nil {
				return nil, fmt.Errorf("%s %s: structural schema: %w", name, ver.Name, err)
			}
			openapi, _, err := validation.NewSchemaValidator(&internal)
			if err != nil {
				return nil, fmt.Errorf("%s %s: openapi validator: %w", name, ver.Name, err)
			}
			key := crd.Spec.Group + "/" + ver.Name + " " + crd.Spec.Names.Kind
			v.kinds[key] = &kindSchema{structural: s, openapi: openapi, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}
		}
	}
	return v, nil
}

// Known reports whether apiVersion/kind is one of the validator's kinds.
func (v *Validator) Known(apiVersion, kind string) bool {
	_, ok := v.kinds[apiVersion+" "+kind]
	return ok
}

// Validate checks obj (a decoded manifest: apiVersion, kind, metadata,
// spec...) as the API server would on create, and applies the schema's
// defaults to obj in place. It returns every problem found, each naming its
// field (for example spec.cidrs[0]).
func (v *Validator) Validate(obj map[string]any) field.ErrorList {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	k, ok := v.kinds[apiVersion+" "+kind]
	if !ok {
		return field.ErrorList{field.NotSupported(field.NewPath("kind"), apiVersion+" "+kind, v.supported())}
	}
	var errs field.ErrorList
	for _, p := range pruning.PruneWithOptions(obj, k.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		errs = append(errs, field.Invalid(field.NewPath(p), nil, "unknown field"))
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), "name is required"))
	} else {
		// Custom resources' names are DNS subdomains, as the API server's
		// custom resource strategy checks them.
		for _, msg := range apimachineryvalidation.NameIsDNSSubdomain(name, false) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
		}
	}
	if labels, ok := meta["labels"].(map[string]any); ok {
		ls := map[string]string{}
		for k, val := range labels {
			s, _ := val.(string)
			ls[k] = s
		}
		errs = append(errs, metav1validation.ValidateLabels(ls, field.NewPath("metadata", "labels"))...)
	}
	defaulting.Default(obj, k.structural)
	errs = append(errs, validation.ValidateCustomResource(nil, obj, k.openapi)...)
	celErrs, _ := k.cel.Validate(context.Background(), nil, k.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

func (v *Validator) supported() []string {
	out := make([]string, 0, len(v.kinds))
	for k := range v.kinds {
		out = append(out, k)
	}
	return out
}
