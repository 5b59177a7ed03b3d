package manifests

import (
	"encoding/json"
	"reflect"
	"strings"
)

// Schema returns the JSON Schema (draft 2020-12) of zdt.yaml, generated from
// the same Go types the parser fills, so the two cannot drift apart.
func Schema() ([]byte, error) {
	s := schemaOf(reflect.TypeOf(Spec{}))
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://zdt.dev/schemas/v1alpha1/bundle.json"
	s["title"] = "zdt bundle spec (zdt.yaml)"
	props := s["properties"].(map[string]any)
	props["apiVersion"].(map[string]any)["const"] = APIVersion
	props["kind"].(map[string]any)["const"] = KindBundle
	return json.MarshalIndent(s, "", "  ")
}

func schemaOf(t reflect.Type) map[string]any {
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Pointer: // optional: the same schema
		return schemaOf(t.Elem())
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		var scalar string
		for _, f := range fieldsOf(t) {
			sf := t.Field(f.index)
			p := schemaOf(sf.Type)
			if doc := sf.Tag.Get("doc"); doc != "" {
				p["description"] = doc
			}
			if def := sf.Tag.Get("default"); def != "" {
				var v any
				if err := json.Unmarshal([]byte(def), &v); err != nil {
					panic("manifests: default of " + t.Name() + "." + f.name + " is not JSON: " + def)
				}
				p["default"] = v
			}
			props[f.name] = p
			if f.required {
				required = append(required, f.name)
			}
			if f.scalar {
				scalar = f.name
			}
		}
		obj := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			obj["required"] = required
		}
		if scalar != "" {
			return map[string]any{"oneOf": []any{
				map[string]any{"type": "string", "description": strings.TrimSpace(t.Field(indexOf(t, scalar)).Tag.Get("doc"))},
				obj,
			}}
		}
		return obj
	}
	panic("manifests: no schema for " + t.String())
}

func indexOf(t reflect.Type, yamlName string) int {
	for _, f := range fieldsOf(t) {
		if f.name == yamlName {
			return f.index
		}
	}
	return 0
}
