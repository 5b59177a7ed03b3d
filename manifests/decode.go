package manifests

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxDocBytes bounds the spec and lock files zdt reads (they cross the air gap
// inside bundles, so they are untrusted input).
const maxDocBytes = 4 << 20

var posType = reflect.TypeOf(Pos{})

// decodeYAML strictly decodes one YAML document into out (a pointer to a
// struct), collecting every problem with its position: unknown and duplicate
// fields, wrong kinds of values, missing required fields.
func decodeYAML(c *collector, data []byte, out any) {
	if len(data) > maxDocBytes {
		c.add(Pos{}, "file is larger than %d bytes", maxDocBytes)
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		c.add(yamlErrPos(err), "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		c.add(Pos{}, "file is empty")
		return
	}
	d := decoder{c: c}
	d.value(doc.Content[0], reflect.ValueOf(out).Elem(), "")
}

// yamlErrPos digs "line N:" out of a yaml.v3 syntax error.
func yamlErrPos(err error) Pos {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		rest := s[i+5:]
		j := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if j > 0 {
			if n, e := strconv.Atoi(rest[:j]); e == nil {
				return Pos{Line: n, Column: 1}
			}
		}
	}
	return Pos{}
}

type decoder struct {
	c     *collector
	depth int
}

func pos(n *yaml.Node) Pos { return Pos{Line: n.Line, Column: n.Column} }

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > 32 {
		d.c.add(pos(n), "%s: nested too deeply", path)
		return
	}
	if n.Kind == yaml.AliasNode {
		d.c.add(pos(n), "%s: YAML aliases are not supported", path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // []byte: not decoded from YAML
			return
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.c.add(pos(n), "%s: expected a list, got %s", path, describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.value(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.c.add(pos(n), "%s: expected a string, got %s", path, describe(n))
			return
		}
		if n.Tag == "!!null" {
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || err != nil {
			d.c.add(pos(n), "%s: expected true or false, got %s", path, describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.c.add(pos(n), "%s: expected an integer, got %s", path, describe(n))
			return
		}
		v.SetInt(i)
	default:
		panic("manifests: unsupported field kind " + v.Kind().String())
	}
}

type fieldInfo struct {
	name     string
	index    int
	required bool
	scalar   bool
}

func fieldsOf(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		tags := f.Tag.Get("zdt")
		out = append(out, fieldInfo{
			name:     name,
			index:    i,
			required: strings.Contains(tags, "required"),
			scalar:   strings.Contains(tags, "scalar"),
		})
	}
	return out
}

func setPos(v reflect.Value, p Pos) {
	if f := v.FieldByName("Pos"); f.IsValid() && f.Type() == posType {
		f.Set(reflect.ValueOf(p))
	}
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	fields := fieldsOf(v.Type())
	setPos(v, pos(n))
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		for _, f := range fields {
			if f.scalar {
				d.value(n, v.Field(f.index), join(path, f.name))
				return
			}
		}
	}
	if n.Kind != yaml.MappingNode {
		what := "a mapping"
		for _, f := range fields {
			if f.scalar {
				what = "a string or a mapping"
			}
		}
		d.c.add(pos(n), "%s: expected %s, got %s", pathOr(path), what, describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.c.add(pos(k), "%s: keys must be strings", pathOr(path))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.c.add(pos(k), "%s: field %q is repeated (first at line %d)", pathOr(path), k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		var fi *fieldInfo
		for j := range fields {
			if fields[j].name == k.Value {
				fi = &fields[j]
			}
		}
		if fi == nil {
			d.c.add(pos(k), "%s: unknown field %q%s", pathOr(path), k.Value, suggest(k.Value, fields))
			continue
		}
		d.value(val, v.Field(fi.index), join(path, fi.name))
	}
	for _, f := range fields {
		if _, ok := seen[f.name]; f.required && !ok {
			d.c.add(pos(n), "%s: missing required field %q", pathOr(path), f.name)
		}
	}
}

func pathOr(p string) string {
	if p == "" {
		return "document"
	}
	return p
}

// suggest names the known field closest to a misspelt one.
func suggest(got string, fields []fieldInfo) string {
	best, bestD := "", 3
	for _, f := range fields {
		if dist := editDistance(strings.ToLower(got), strings.ToLower(f.name)); dist < bestD {
			best, bestD = f.name, dist
		}
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (known: " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
