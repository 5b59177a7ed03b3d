package manifests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const exampleSpec = "../examples/quickstart/zdt.yaml"

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	data, err := Schema()
	if err != nil {
		t.Fatalf("Schema: %v", err)
	}
	if !json.Valid(data) {
		t.Fatalf("Schema is not valid JSON:\n%s", data)
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchemaHeader(t *testing.T) {
	s := loadSchema(t)
	for key, want := range map[string]string{
		"$schema": "https://json-schema.org/draft/2020-12/schema",
		"$id":     "https://zdt.dev/schemas/v1alpha1/bundle.json",
	} {
		if s[key] != want {
			t.Errorf("%s = %v, want %q", key, s[key], want)
		}
	}
	props := s["properties"].(map[string]any)
	if c := props["apiVersion"].(map[string]any)["const"]; c != APIVersion {
		t.Errorf("apiVersion const = %v, want %q", c, APIVersion)
	}
	if c := props["kind"].(map[string]any)["const"]; c != KindBundle {
		t.Errorf("kind const = %v, want %q", c, KindBundle)
	}
	a, _ := Schema()
	b, _ := Schema()
	if string(a) != string(b) {
		t.Error("Schema is not deterministic")
	}
}

// yamlFields reads the yaml tags of t itself (not via the package's
// fieldsOf), so the test notices when the schema and the types disagree.
func yamlFields(t reflect.Type) (names []string, required []string, scalar string, types map[string]reflect.Type) {
	types = map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		types[name] = f.Type
		zdt := strings.Split(f.Tag.Get("zdt"), ",")
		if slices.Contains(zdt, "required") {
			required = append(required, name)
		}
		if slices.Contains(zdt, "scalar") {
			scalar = name
		}
	}
	return names, required, scalar, types
}

// TestSchemaMatchesTypes walks Spec and every struct under it by reflection
// and checks its schema: an object with additionalProperties false, exactly
// the yaml fields as properties, the required ones listed, and the right
// JSON types all the way down.
func TestSchemaMatchesTypes(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(path string, node map[string]any, typ reflect.Type)
	walk = func(path string, node map[string]any, typ reflect.Type) {
		if typ.Kind() == reflect.Pointer { // optional: the element's schema
			typ = typ.Elem()
		}
		switch typ.Kind() {
		case reflect.String:
			if node["type"] != "string" {
				t.Errorf("%s: type = %v, want string", path, node["type"])
			}
		case reflect.Bool:
			if node["type"] != "boolean" {
				t.Errorf("%s: type = %v, want boolean", path, node["type"])
			}
		case reflect.Int, reflect.Int64:
			if node["type"] != "integer" {
				t.Errorf("%s: type = %v, want integer", path, node["type"])
			}
		case reflect.Slice:
			if node["type"] != "array" {
				t.Errorf("%s: type = %v, want array", path, node["type"])
				return
			}
			walk(path+"[]", node["items"].(map[string]any), typ.Elem())
		case reflect.Map:
			if node["type"] != "object" {
				t.Errorf("%s: type = %v, want object", path, node["type"])
				return
			}
			elem, ok := node["additionalProperties"].(map[string]any)
			if !ok {
				t.Errorf("%s: additionalProperties = %v, want the values' schema", path, node["additionalProperties"])
				return
			}
			walk(path+"{}", elem, typ.Elem())
		case reflect.Struct:
			seen[typ] = true
			names, required, scalar, types := yamlFields(typ)
			if scalar != "" {
				oneOf, ok := node["oneOf"].([]any)
				if !ok || len(oneOf) != 2 {
					t.Errorf("%s: %s has a scalar form, want oneOf [string, object], got %v", path, typ.Name(), node)
					return
				}
				if s := oneOf[0].(map[string]any); s["type"] != "string" {
					t.Errorf("%s: oneOf[0] = %v, want a string", path, s)
				}
				node = oneOf[1].(map[string]any)
			}
			if node["type"] != "object" {
				t.Errorf("%s: type = %v, want object", path, node["type"])
				return
			}
			if node["additionalProperties"] != false {
				t.Errorf("%s: additionalProperties = %v, want false", path, node["additionalProperties"])
			}
			props, _ := node["properties"].(map[string]any)
			var got []string
			for k := range props {
				got = append(got, k)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(names))
			if !slices.Equal(got, want) {
				t.Errorf("%s: properties = %v, want the yaml fields of %s: %v", path, got, typ.Name(), want)
			}
			var gotReq []string
			if r, ok := node["required"].([]any); ok {
				for _, x := range r {
					gotReq = append(gotReq, x.(string))
				}
			}
			if !slices.Equal(gotReq, required) {
				t.Errorf("%s: required = %v, want %v", path, gotReq, required)
			}
			for _, name := range names {
				p, ok := props[name].(map[string]any)
				if !ok {
					continue
				}
				walk(path+"."+name, p, types[name])
			}
		default:
			t.Errorf("%s: field kind %s has no schema check", path, typ.Kind())
		}
	}
	walk("spec", loadSchema(t), reflect.TypeOf(Spec{}))
	for _, typ := range []reflect.Type{
		reflect.TypeOf(Spec{}), reflect.TypeOf(Metadata{}), reflect.TypeOf(Component{}),
		reflect.TypeOf(Image{}), reflect.TypeOf(Chart{}), reflect.TypeOf(File{}), reflect.TypeOf(AMI{}),
		reflect.TypeOf(Actions{}), reflect.TypeOf(Action{}),
	} {
		if !seen[typ] {
			t.Errorf("schema walk never reached %s", typ.Name())
		}
	}
}

// TestSchemaDescribesFields: every field a user writes has a description,
// except the few that explain themselves.
func TestSchemaDescribesFields(t *testing.T) {
	selfExplaining := map[string]bool{"Metadata.description": true, "AMI.description": true, "Spec.metadata": true}
	for _, typ := range []reflect.Type{
		reflect.TypeOf(Spec{}), reflect.TypeOf(Metadata{}), reflect.TypeOf(Component{}),
		reflect.TypeOf(Image{}), reflect.TypeOf(Chart{}), reflect.TypeOf(File{}), reflect.TypeOf(AMI{}),
		reflect.TypeOf(Actions{}), reflect.TypeOf(Action{}),
	} {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || selfExplaining[typ.Name()+"."+name] {
				continue
			}
			if f.Tag.Get("doc") == "" {
				t.Errorf("%s.%s has no doc tag (the schema's description)", typ.Name(), name)
			}
		}
	}
}

// TestSchemaAcceptsValidSpecs checks valid specs against the schema's shape
// (known keys, required keys, string-or-object items) with a small walker,
// so the schema an editor uses does not flag what the parser accepts.
func TestSchemaAcceptsValidSpecs(t *testing.T) {
	schema := loadSchema(t)
	example, err := os.ReadFile(filepath.FromSlash(exampleSpec))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"quickstart example", example},
		{"full spec", []byte(fullSpec)},
		{"actions", []byte(actionsSpec)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse("", tt.data); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var doc any
			if err := yaml.Unmarshal(tt.data, &doc); err != nil {
				t.Fatal(err)
			}
			for _, problem := range schemaCheck(schema, doc, "spec") {
				t.Error(problem)
			}
		})
	}
}

func schemaCheck(schema map[string]any, v any, path string) []string {
	if oneOf, ok := schema["oneOf"].([]any); ok {
		var last []string
		for _, alt := range oneOf {
			if last = schemaCheck(alt.(map[string]any), v, path); len(last) == 0 {
				return nil
			}
		}
		return append(last, path+": matches no oneOf alternative")
	}
	switch schema["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return []string{path + ": not an object"}
		}
		var out []string
		props, _ := schema["properties"].(map[string]any)
		for k, val := range m {
			p, ok := props[k].(map[string]any)
			if elem, isMap := schema["additionalProperties"].(map[string]any); isMap && props == nil {
				p, ok = elem, true // a map: every value has the one schema
			}
			if !ok {
				out = append(out, path+": property "+k+" not in schema")
				continue
			}
			out = append(out, schemaCheck(p, val, path+"."+k)...)
		}
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				if _, ok := m[r.(string)]; !ok {
					out = append(out, path+": required "+r.(string)+" missing")
				}
			}
		}
		if c, ok := schema["const"]; ok && c != v {
			out = append(out, path+": not the const")
		}
		return out
	case "array":
		l, ok := v.([]any)
		if !ok {
			return []string{path + ": not an array"}
		}
		var out []string
		for i, e := range l {
			out = append(out, schemaCheck(schema["items"].(map[string]any), e, path+"["+strconv.Itoa(i)+"]")...)
		}
		return out
	case "string":
		// YAML scalars like 0.1.0 or 0755 are strings to the parser.
		switch v.(type) {
		case map[string]any, []any:
			return []string{path + ": not a string"}
		}
		if c, ok := schema["const"]; ok && c != v {
			return []string{path + ": not the const"}
		}
		return nil
	case "boolean":
		if _, ok := v.(bool); !ok {
			return []string{path + ": not a boolean"}
		}
		return nil
	}
	return []string{path + ": schema has no type"}
}

func TestExampleLoads(t *testing.T) {
	s, err := Load(exampleSpec)
	if err != nil {
		t.Fatalf("Load(%s): %v", exampleSpec, err)
	}
	if s.Metadata.Name != "quickstart" || s.ItemCount() == 0 {
		t.Errorf("Load(%s) = name %q, %d items", exampleSpec, s.Metadata.Name, s.ItemCount())
	}
}
