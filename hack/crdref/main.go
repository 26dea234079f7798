// Command crdref writes the API reference of docs/api-reference.md from the
// CRDs in config/crd/bases: every field of every kind, with its type,
// default, bounds and description, as the API server enforces them.
// `make manifests` runs it, `make verify` checks the output is current.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/lanmonitor/lanmonitor/config/crd"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "crdref:", err)
		os.Exit(1)
	}
}

func run(w *os.File) error {
	fmt.Fprint(w, `# API reference

Generated from the CRDs (config/crd/bases) by hack/crdref: do not edit.
All kinds are cluster-scoped, group lanmonitor.io, version v1alpha1.
Validation (bounds, enums, CEL rules) is enforced by the API server, and by
the standalone agent with the same schema.

`)
	for _, name := range []string{crd.LanMonitors, crd.IPBlocks, crd.LanMonitorNodes} {
		raw, err := fs.ReadFile(crd.FS, name)
		if err != nil {
			return err
		}
		var c apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(raw, &c); err != nil {
			return err
		}
		v := c.Spec.Versions[0]
		fmt.Fprintf(w, "## %s\n\n", c.Spec.Names.Kind)
		fmt.Fprintf(w, "`kubectl get %s` (short names: %s)\n\n", c.Spec.Names.Plural, strings.Join(c.Spec.Names.ShortNames, ", "))
		if len(v.AdditionalPrinterColumns) > 0 {
			var cols []string
			for _, col := range v.AdditionalPrinterColumns {
				cols = append(cols, strings.ToUpper(col.Name))
			}
			fmt.Fprintf(w, "Columns: %s\n\n", strings.Join(cols, ", "))
		}
		s := v.Schema.OpenAPIV3Schema
		fmt.Fprintf(w, "%s\n\n", oneLine(s.Description))
		fmt.Fprintln(w, "| field | type | description |\n|---|---|---|")
		for _, top := range []string{"spec", "status"} {
			if p, ok := s.Properties[top]; ok {
				fields(w, top, p)
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

// fields writes one row per field under path, depth first, in name order.
func fields(w *os.File, path string, s apiextensionsv1.JSONSchemaProps) {
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.Properties[n]
		fp := path + "." + n
		required := false
		for _, r := range s.Required {
			required = required || r == n
		}
		fmt.Fprintf(w, "| `%s` | %s | %s |\n", fp, typeOf(p), describe(p, required))
		switch {
		case p.Type == "object" && len(p.Properties) > 0:
			fields(w, fp, p)
		case p.Type == "array" && p.Items != nil && p.Items.Schema != nil && len(p.Items.Schema.Properties) > 0 && n != "conditions":
			fields(w, fp+"[]", *p.Items.Schema)
		}
	}
}

func typeOf(p apiextensionsv1.JSONSchemaProps) string {
	t := p.Type
	if t == "array" && p.Items != nil && p.Items.Schema != nil {
		t = "[]" + p.Items.Schema.Type
	}
	if p.Format != "" {
		t += " (" + p.Format + ")"
	}
	return t
}

func describe(p apiextensionsv1.JSONSchemaProps, required bool) string {
	var parts []string
	if required {
		parts = append(parts, "**required**")
	}
	parts = append(parts, oneLine(p.Description))
	var rules []string
	if p.Default != nil {
		rules = append(rules, "default `"+string(p.Default.Raw)+"`")
	}
	if len(p.Enum) > 0 {
		var vs []string
		for _, e := range p.Enum {
			vs = append(vs, strings.Trim(string(e.Raw), `"`))
		}
		rules = append(rules, "one of "+strings.Join(vs, ", "))
	}
	if p.Minimum != nil {
		rules = append(rules, "min "+strconv.FormatFloat(*p.Minimum, 'f', -1, 64))
	}
	if p.Maximum != nil {
		rules = append(rules, "max "+strconv.FormatFloat(*p.Maximum, 'f', -1, 64))
	}
	if p.MinItems != nil {
		rules = append(rules, fmt.Sprintf("min %d items", *p.MinItems))
	}
	if p.MaxItems != nil {
		rules = append(rules, fmt.Sprintf("max %d items", *p.MaxItems))
	}
	if p.MaxLength != nil {
		rules = append(rules, fmt.Sprintf("max length %d", *p.MaxLength))
	}
	if p.Pattern != "" {
		rules = append(rules, "pattern `"+p.Pattern+"`")
	}
	for _, r := range p.XValidations {
		rules = append(rules, "CEL `"+r.Rule+"`")
	}
	if p.Items != nil && p.Items.Schema != nil {
		for _, r := range p.Items.Schema.XValidations {
			rules = append(rules, "each: CEL `"+r.Rule+"`")
		}
		if p.Items.Schema.MaxLength != nil {
			rules = append(rules, fmt.Sprintf("each: max length %d", *p.Items.Schema.MaxLength))
		}
	}
	if len(rules) > 0 {
		parts = append(parts, "("+strings.Join(rules, "; ")+")")
	}
	return strings.ReplaceAll(strings.Join(parts, " "), "|", "\\|")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
