package crd_test

import (
	"os/exec"
	"path"
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/lanmonitor/lanmonitor/config/crd"
	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// TestKeepsPreviousReleaseFields: every field of the previous release's
// CRDs is still in this tree's, in every served version. The API server
// prunes a field the schema does not know from what it reads and writes,
// so a field removed here vanishes from stored objects the moment the
// upgrade hook applies these CRDs, while the previous release's
// controller and agents still run and may depend on it (0.2 controllers
// list only IPBlocks whose status.ruleID is set: pruning it stopped their
// agents enforcing mid-upgrade). Deprecate a field; remove it only in a
// new API version.
func TestKeepsPreviousReleaseFields(t *testing.T) {
	current, err := crd.All()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, c := range current {
		byName[c.Name] = c
	}
	for _, file := range []string{crd.LanMonitors, crd.IPBlocks, crd.LanMonitorNodes} {
		out, err := exec.Command("git", "show", testenv.PreviousRelease+":charts/lanmonitor/crds/"+path.Base(file)).Output()
		if err != nil {
			if isShallow() {
				t.Skipf("a shallow clone has no previous release %s (git fetch --unshallow)", testenv.PreviousRelease)
			}
			t.Fatalf("git show %s's %s: %v", testenv.PreviousRelease, path.Base(file), err)
		}
		var old apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(out, &old); err != nil {
			t.Fatalf("parse the previous %s: %v", path.Base(file), err)
		}
		cur := byName[old.Name]
		if cur == nil {
			t.Errorf("CRD %s of the previous release is gone", old.Name)
			continue
		}
		for _, ov := range old.Spec.Versions {
			var nv *apiextensionsv1.CustomResourceDefinitionVersion
			for i := range cur.Spec.Versions {
				if cur.Spec.Versions[i].Name == ov.Name {
					nv = &cur.Spec.Versions[i]
				}
			}
			if nv == nil {
				t.Errorf("%s: version %s of the previous release is gone", old.Name, ov.Name)
				continue
			}
			have := fields(nv.Schema.OpenAPIV3Schema, "", map[string]bool{})
			var missing []string
			for f := range fields(ov.Schema.OpenAPIV3Schema, "", map[string]bool{}) {
				if !have[f] {
					missing = append(missing, f)
				}
			}
			sort.Strings(missing)
			if len(missing) > 0 {
				t.Errorf("%s %s: fields of the previous release missing from the schema (the API server would prune them from stored objects): %s",
					old.Name, ov.Name, strings.Join(missing, ", "))
			}
			if len(have) < 20 {
				t.Errorf("%s %s: only %d fields found; the schema walk is broken", old.Name, ov.Name, len(have))
			}
		}
	}
}

// fields adds the path of every property under s to out (".spec.cidrs",
// ".spec.cidrs[]", ".status.conditions[].type") and returns out.
func fields(s *apiextensionsv1.JSONSchemaProps, prefix string, out map[string]bool) map[string]bool {
	if s == nil {
		return out
	}
	for name, p := range s.Properties {
		out[prefix+"."+name] = true
		fields(&p, prefix+"."+name, out)
	}
	if s.Items != nil && s.Items.Schema != nil {
		out[prefix+"[]"] = true
		fields(s.Items.Schema, prefix+"[]", out)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		out[prefix+"{}"] = true
		fields(s.AdditionalProperties.Schema, prefix+"{}", out)
	}
	return out
}

func isShallow() bool {
	out, err := exec.Command("git", "rev-parse", "--is-shallow-repository").Output()
	return err == nil && strings.TrimSpace(string(out)) == "true"
}
