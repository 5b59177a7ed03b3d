package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

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
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			c.add(Pos{}, "file is empty")
			return
		}
		p, msg := yamlErr(err, data)
		c.add(p, "%s", msg)
		return
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) { // nothing, or only "---"
		c.add(Pos{}, "file is empty")
		return
	}
	// yaml.Unmarshal would silently drop every document after the first.
	var extra yaml.Node
	if err := dec.Decode(&extra); err != nil && !errors.Is(err, io.EOF) {
		p, msg := yamlErr(err, data)
		c.add(p, "%s", msg)
		return
	} else if err == nil && len(extra.Content) > 0 && !isNull(extra.Content[0]) {
		c.add(pos(&extra), "only one YAML document is allowed; another starts here")
		return
	}
	if c.at == nil {
		c.at = map[string]Pos{}
	}
	d := decoder{c: c}
	d.value(doc.Content[0], reflect.ValueOf(out).Elem(), "")
}

// yamlErr turns a yaml.v3 syntax error into a position and a message
// without the "yaml: line N:" prefix. yaml.v3 counts lines from 1 in
// scanner errors but from 0 in parser errors (then naming the line where
// the unfinished list or mapping starts), and gives no line at all for
// problems on the first line or with the bytes themselves.
func yamlErr(err error, data []byte) (Pos, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		num, tail, ok := strings.Cut(rest, ": ")
		if n, e := strconv.Atoi(num); ok && e == nil && n > 0 {
			line, msg = n, tail
		}
	}
	// yaml.v3 may count the end of the input as one more line.
	line = min(line, len(lineStarts(data)))
	switch {
	case readerProblems[msg]:
		return badCharPos(data), msg
	case strings.HasPrefix(msg, "unknown anchor '"):
		name := strings.TrimSuffix(strings.TrimPrefix(msg, "unknown anchor '"), "' referenced")
		if i := bytes.Index(data, []byte("*"+name)); i >= 0 {
			return offsetPos(data, i), msg
		}
		return Pos{}, msg
	case parserProblems[msg]:
		return Pos{Line: problemLine(err, data, line+1), Column: 1}, msg
	case line == 0:
		return Pos{Line: 1, Column: 1}, msg
	}
	return Pos{Line: line, Column: 1}, msg
}

// problemLine finds the line a yaml.v3 parser error was found on: the first
// line whose prefix of the file fails with the same error. yaml.v3 itself
// only names the line where the enclosing list or mapping starts (from, a
// lower bound). A binary search, so a few parses; only on the error path,
// and only for files of spec size (past that, from is good enough).
func problemLine(err error, data []byte, from int) int {
	starts := lineStarts(data)
	hi := len(starts)
	lo := min(max(from, 1), hi) // the answer is in [lo, hi]
	if len(data) > 1<<20 {
		return lo
	}
	for lo < hi {
		mid := lo + (hi-lo)/2 // the prefix holding lines 1..mid
		if e := firstYAMLError(data[:starts[mid]]); e != nil && e.Error() == err.Error() {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// lineStarts is the offset each line starts at, counting line breaks as
// yaml.v3 does: \n, \r\n, \r, NEL, LS and PS. A break at the very end
// starts one more (empty) line, where yaml.v3 may report the end of input.
func lineStarts(data []byte) []int {
	starts := []int{0}
	for i := 0; i < len(data); {
		n := breakLen(data[i:])
		if n == 0 {
			i++
			continue
		}
		i += n
		starts = append(starts, i)
	}
	return starts
}

func breakLen(b []byte) int {
	switch {
	case b[0] == '\n':
		return 1
	case b[0] == '\r':
		if len(b) > 1 && b[1] == '\n' {
			return 2
		}
		return 1
	case len(b) > 1 && b[0] == 0xc2 && b[1] == 0x85: // NEL
		return 2
	case len(b) > 2 && b[0] == 0xe2 && b[1] == 0x80 && (b[2] == 0xa8 || b[2] == 0xa9): // LS, PS
		return 3
	}
	return 0
}

// firstYAMLError is the error decodeYAML would meet first in data, if any.
func firstYAMLError(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for range 2 {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	return nil
}

// parserProblems are yaml.v3's parser (not scanner) errors: their line is 0-based.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// readerProblems are yaml.v3's errors about the bytes themselves; they carry
// no position, so badCharPos finds it.
var readerProblems = map[string]bool{
	"control characters are not allowed": true,
	"invalid leading UTF-8 octet":        true,
	"invalid trailing UTF-8 octet":       true,
	"incomplete UTF-8 octet sequence":    true,
	"invalid length of a UTF-8 sequence": true,
	"invalid Unicode character":          true,
}

// offsetPos is the line and column (in runes) of byte offset off.
func offsetPos(data []byte, off int) Pos {
	starts := lineStarts(data)
	line := sort.SearchInts(starts, off+1) // lines starting at or before off
	return Pos{Line: line, Column: utf8.RuneCount(data[starts[line-1]:off]) + 1}
}

// badCharPos is where the first character yaml.v3 refuses is: invalid UTF-8
// or one outside YAML's printable set. Pos{} when there is none.
func badCharPos(data []byte) Pos {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		printable := r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) || r == 0x85 ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd) || (r >= 0x10000 && r <= 0x10ffff)
		if (r == utf8.RuneError && size <= 1) || !printable {
			return offsetPos(data, i)
		}
		i += size
	}
	return Pos{}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

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
	d.c.at[path] = pos(n)
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
	case reflect.Map: // map[string]string
		d.mapping(n, v, path)
	case reflect.Pointer: // optional: nil when absent or null
		if isNull(n) {
			return
		}
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
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

// mapping decodes a mapping of strings to strings (a chart's images),
// recording where each key was written at path.KEY.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.c.add(pos(n), "%s: expected a mapping, got %s", path, describe(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.c.add(pos(k), "%s: keys must be strings", path)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.c.add(pos(k), "%s: %q is repeated (first at line %d)", path, k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		e := reflect.New(v.Type().Elem()).Elem()
		d.value(val, e, path+"."+k.Value)
		d.c.at[path+"."+k.Value] = pos(k)
		m.SetMapIndex(reflect.ValueOf(k.Value), e)
	}
	v.Set(m)
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
			d.c.unknown++
			continue
		}
		if fi.required && v.Field(fi.index).Kind() == reflect.String && val.Kind == yaml.ScalarNode &&
			(isNull(val) || val.Value == "") {
			d.c.add(pos(val), "%s: required field %q is empty", pathOr(path), fi.name)
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
