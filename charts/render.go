package charts

// The renderer below is adapted from Helm's engine
// (helm.sh/helm/v3/pkg/engine, Apache License 2.0): the same templates,
// values scoping, functions and include/tpl semantics, with bounds Helm's
// engine lacks. A chart comes from an upstream zdt does not trust, and its
// templates are a program: one line (`range until 100000` nested twice) can
// produce gigabytes. Here every byte a template writes (into its output,
// or into an include or tpl result) and every string or list a function
// returns is charged to one budget per chart; functions whose result size
// their arguments decide (repeat, indent, until, seq, …) are refused before
// they allocate; every write and function call checks the context (a time
// limit, and cancellation). A loop that neither writes nor calls cannot be
// interrupted by text/template: rendering runs in its own goroutine, and
// the caller returns when the context is done.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"
	"github.com/Masterminds/sprig/v3"
	"github.com/gobwas/glob"
	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	sigyaml "sigs.k8s.io/yaml"
	goyaml "sigs.k8s.io/yaml/goyaml.v3"
	"zdt.dev/zdt/bundle"
)

// maxIncludeDepth bounds include nesting (Helm: 1000 per name), and
// maxTplDepth tpl nesting (each level clones the templates).
const (
	maxIncludeDepth = 1000
	maxTplDepth     = 50
)

// renderBudget is what one chart's rendering may still produce.
type renderBudget struct {
	ctx      context.Context
	limit    int64
	used     int64
	depth    int
	tplDepth int
	// failed is the first limit hit: reported as is, rather than through
	// the chain of template errors around it.
	failed error
}

func (b *renderBudget) fail(err error) error {
	if b.failed == nil {
		b.failed = err
	}
	return err
}

func (b *renderBudget) charge(n int64) error {
	b.used += n
	if b.used > b.limit {
		return b.fail(fmt.Errorf("output over %d bytes: %w", b.limit, bundle.ErrRenderLimit))
	}
	return b.alive()
}

func (b *renderBudget) alive() error {
	if err := b.ctx.Err(); err != nil {
		return b.fail(fmt.Errorf("stopped: %w", context.Cause(b.ctx)))
	}
	return nil
}

func (b *renderBudget) left() int64 { return b.limit - b.used }

// budgetWriter collects a template's output, charged to the budget.
type budgetWriter struct {
	b   *renderBudget
	buf strings.Builder
}

func (w *budgetWriter) Write(p []byte) (int, error) {
	if err := w.b.charge(int64(len(p))); err != nil {
		return 0, err
	}
	return w.buf.Write(p)
}

// Render renders a chart's templates without a cluster, as a
// client-only install would, within ctx (its deadline is the time limit)
// and limit bytes of output. It returns when ctx is done even if the
// templates are still running.
func Render(ctx context.Context, ch *chart.Chart, vals map[string]any, release, namespace string, limit int64) (map[string]string, error) {
	type result struct {
		out map[string]string
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("rendering failed: %v", r)}
			}
		}()
		if err := chartutil.ProcessDependencies(ch, vals); err != nil {
			done <- result{err: err}
			return
		}
		rv, err := commonutil.ToRenderValuesWithSchemaValidation(ch, vals, common.ReleaseOptions{
			Name: release, Namespace: namespace, Revision: 1, IsInstall: true,
		}, common.DefaultCapabilities, true)
		if err != nil {
			done <- result{err: err}
			return
		}
		out, err := renderTemplates(&renderBudget{ctx: ctx, limit: limit}, ch, rv)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("rendering stopped: %w", context.Cause(ctx))
	}
}

// renderable is a template, the values it sees and its chart's path.
type renderable struct {
	tpl      string
	vals     common.Values
	basePath string
}

// renderTemplates parses every template of the chart and its
// dependencies, then executes those that give manifests (partials and
// NOTES.txt are only parsed: discovery reads YAML and JSON).
func renderTemplates(b *renderBudget, ch *chart.Chart, vals common.Values) (map[string]string, error) {
	tpls := map[string]renderable{}
	recAllTpls(ch, tpls, vals)
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	included := map[string]int{}
	t.Funcs(b.funcMap(t, included))
	keys := sortTemplates(tpls)
	for _, name := range keys {
		if _, err := t.New(name).Parse(tpls[name].tpl); err != nil {
			return nil, fmt.Errorf("parse error in %s: %w", name, err)
		}
	}
	out := make(map[string]string, len(keys))
	for _, name := range keys {
		if strings.HasPrefix(path.Base(name), "_") {
			continue
		}
		if ext := path.Ext(name); ext != ".yaml" && ext != ".yml" && ext != ".json" {
			continue
		}
		r := tpls[name]
		r.vals["Template"] = common.Values{"Name": name, "BasePath": r.basePath}
		w := &budgetWriter{b: b}
		if err := t.ExecuteTemplate(w, name, r.vals); err != nil {
			if b.failed != nil {
				err = b.failed
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = strings.ReplaceAll(w.buf.String(), "<no value>", "")
	}
	return out, nil
}

// funcMap is Helm's template functions (sprig without env and expandenv,
// Helm's own, include, tpl, required, fail; lookup finds nothing and
// getHostByName resolves nothing), each wrapped by b.guard.
func (b *renderBudget) funcMap(t *template.Template, included map[string]int) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	extra := template.FuncMap{
		"toToml": tplToTOML, "fromToml": tplFromTOML,
		"toYaml": tplToYAML, "toYamlPretty": tplToYAMLPretty, "fromYaml": tplFromYAML, "fromYamlArray": tplFromYAMLArray,
		"toJson": tplToJSON, "fromJson": tplFromJSON, "fromJsonArray": tplFromJSONArray,
		"include": b.includeFun(t, included),
		"tpl":     b.tplFun(t, included),
		"required": func(warn string, val any) (any, error) {
			if val == nil || val == "" {
				return val, errors.New(warn)
			}
			return val, nil
		},
		"fail":          func(msg string) (string, error) { return "", errors.New(msg) },
		"lookup":        func(string, string, string, string) (map[string]any, error) { return map[string]any{}, nil },
		"getHostByName": func(string) string { return "" },
	}
	for k, v := range extra {
		f[k] = v
	}
	for k, v := range f {
		f[k] = b.guard(k, v)
	}
	return f
}

// guard wraps a template function: the context is checked and the
// arguments are vetted before the call (a size the result would have is
// checked against the budget), and a string, list or map it returns is
// charged to the budget. A refused call panics with the error, which
// text/template reports as the call's error.
func (b *renderBudget) guard(name string, fn any) any {
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func {
		return fn
	}
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		if err := b.alive(); err != nil {
			panic(err)
		}
		if err := b.vet(name, args); err != nil {
			panic(err)
		}
		var out []reflect.Value
		if t.IsVariadic() {
			out = v.CallSlice(args)
		} else {
			out = v.Call(args)
		}
		for _, o := range out {
			if err := b.charge(resultSize(o)); err != nil {
				panic(fmt.Errorf("%s: %w", name, err))
			}
		}
		return out
	}).Interface()
}

// resultSize estimates the bytes a function's result holds.
func resultSize(v reflect.Value) int64 {
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return 0
		}
		return resultSize(v.Elem())
	case reflect.String:
		return int64(v.Len())
	case reflect.Slice, reflect.Array:
		return int64(v.Len()) * 8
	case reflect.Map:
		return int64(v.Len()) * 16
	}
	return 0
}

// sizedFuncs are the functions whose result size a count argument
// decides; vet checks it before they allocate.
var sizedFuncs = map[string]bool{
	"repeat": true, "indent": true, "nindent": true, "until": true, "untilStep": true, "seq": true,
	"randAlpha": true, "randAlphaNum": true, "randAscii": true, "randNumeric": true, "randBytes": true,
}

// vet refuses a call to one of sizedFuncs whose arguments make a result
// larger than the budget's remainder.
func (b *renderBudget) vet(name string, args []reflect.Value) error {
	if !sizedFuncs[name] {
		return nil
	}
	left := float64(b.left())
	var nums []float64
	var strs []string
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Interface, reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			nums = append(nums, float64(v.Int()))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			nums = append(nums, float64(v.Uint()))
		case reflect.Float32, reflect.Float64:
			nums = append(nums, v.Float())
		case reflect.String:
			s := v.String()
			strs = append(strs, s)
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				nums = append(nums, f)
			}
		case reflect.Slice:
			if name == "seq" {
				for i := range v.Len() {
					walk(v.Index(i))
				}
			}
		}
	}
	for _, a := range args {
		walk(a)
	}
	var size float64
	switch name {
	case "repeat", "indent", "nindent":
		if len(nums) > 0 && len(strs) > 0 {
			s := strs[len(strs)-1]
			size = math.Abs(nums[0]) * float64(len(s)+1)
			if name != "repeat" {
				size = math.Abs(nums[0])*float64(strings.Count(s, "\n")+1) + float64(len(s))
			}
		}
	case "until":
		if len(nums) > 0 {
			size = math.Abs(nums[0]) * 8
		}
	case "untilStep", "seq":
		if len(nums) >= 2 {
			lo, hi, step := nums[0], nums[len(nums)-1], 1.0
			if len(nums) == 3 && name == "untilStep" {
				hi, step = nums[1], nums[2]
			} else if len(nums) == 3 {
				step = nums[1]
			}
			if step == 0 {
				step = 1
			}
			size = math.Abs((hi-lo)/step) * 8
		} else if len(nums) == 1 {
			size = math.Abs(nums[0]) * 8
		}
	}
	for _, n := range nums {
		size = max(size, math.Abs(n))
	}
	if size > left {
		return b.fail(fmt.Errorf("%s: arguments ask for %.0f bytes, over the %d-byte limit: %w", name, size, b.limit, bundle.ErrRenderLimit))
	}
	return nil
}

// includeFun is Helm's include, its output charged to the budget.
func (b *renderBudget) includeFun(t *template.Template, included map[string]int) func(string, any) (string, error) {
	return func(name string, data any) (string, error) {
		if included[name] > maxIncludeDepth || b.depth > maxIncludeDepth {
			return "", b.fail(fmt.Errorf("include %q nested deeper than %d: %w", name, maxIncludeDepth, bundle.ErrRenderLimit))
		}
		included[name]++
		b.depth++
		defer func() { included[name]--; b.depth-- }()
		w := &budgetWriter{b: b}
		err := t.ExecuteTemplate(w, name, data)
		return w.buf.String(), err
	}
}

// tplFun is Helm's tpl, its output charged to the budget.
func (b *renderBudget) tplFun(parent *template.Template, included map[string]int) func(string, any) (string, error) {
	return func(text string, vals any) (string, error) {
		if b.tplDepth >= maxTplDepth {
			return "", b.fail(fmt.Errorf("tpl nested deeper than %d: %w", maxTplDepth, bundle.ErrRenderLimit))
		}
		b.tplDepth++
		defer func() { b.tplDepth-- }()
		t, err := parent.Clone()
		if err != nil {
			return "", fmt.Errorf("cannot clone template: %w", err)
		}
		t.Option("missingkey=zero")
		t.Funcs(template.FuncMap{
			"include": b.guard("include", b.includeFun(t, included)),
			"tpl":     b.guard("tpl", b.tplFun(t, included)),
		})
		if t, err = t.New(parent.Name()).Parse(text); err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		w := &budgetWriter{b: b}
		if err := t.Execute(w, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(w.buf.String(), "<no value>", ""), nil
	}
}

func sortTemplates(tpls map[string]renderable) []string {
	keys := make([]string, 0, len(tpls))
	for k := range tpls {
		keys = append(keys, k)
	}
	// Deeper paths (subcharts) first, then by name, as Helm does.
	sort.Slice(keys, func(i, j int) bool {
		ci, cj := strings.Count(keys[i], "/"), strings.Count(keys[j], "/")
		if ci != cj {
			return ci > cj
		}
		return keys[i] > keys[j]
	})
	return keys
}

// recAllTpls collects the templates of a chart and its dependencies, each
// with the values its chart sees (a subchart sees .Values.<its name>).
func recAllTpls(c *chart.Chart, templates map[string]renderable, vals common.Values) map[string]any {
	subCharts := map[string]any{}
	meta := struct {
		chart.Metadata
		IsRoot bool
	}{*c.Metadata, c.IsRoot()}
	next := map[string]any{
		"Chart":        meta,
		"Files":        newTplFiles(c.Files),
		"Release":      vals["Release"],
		"Capabilities": vals["Capabilities"],
		"Values":       make(common.Values),
		"Subcharts":    subCharts,
	}
	if c.IsRoot() {
		next["Values"] = vals["Values"]
	} else if vs, err := vals.Table("Values." + c.Name()); err == nil {
		next["Values"] = vs
	}
	for _, child := range c.Dependencies() {
		subCharts[child.Name()] = recAllTpls(child, templates, next)
	}
	id := c.ChartFullPath()
	library := strings.EqualFold(c.Metadata.Type, "library")
	for _, t := range c.Templates {
		if t == nil || (library && !strings.HasPrefix(filepath.Base(t.Name), "_")) {
			continue
		}
		templates[path.Join(id, t.Name)] = renderable{tpl: string(t.Data), vals: next, basePath: path.Join(id, "templates")}
	}
	return next
}

// tplFiles is .Files: the chart's files, as Helm's engine gives them.
type tplFiles map[string][]byte

func newTplFiles(from []*common.File) tplFiles {
	f := tplFiles{}
	for _, x := range from {
		f[x.Name] = x.Data
	}
	return f
}

func (f tplFiles) GetBytes(name string) []byte {
	if v, ok := f[name]; ok {
		return v
	}
	return []byte{}
}

func (f tplFiles) Get(name string) string { return string(f.GetBytes(name)) }

func (f tplFiles) Glob(pattern string) tplFiles {
	g, err := glob.Compile(pattern, '/')
	if err != nil {
		g, _ = glob.Compile("**")
	}
	nf := tplFiles{}
	for name, data := range f {
		if g.Match(name) {
			nf[name] = data
		}
	}
	return nf
}

func (f tplFiles) AsConfig() string {
	if f == nil {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return tplToYAML(m)
}

func (f tplFiles) AsSecrets() string {
	if f == nil {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return tplToYAML(m)
}

func (f tplFiles) Lines(p string) []string {
	if f == nil || len(f[p]) == 0 {
		return []string{}
	}
	return strings.Split(strings.TrimSuffix(string(f[p]), "\n"), "\n")
}

func tplToYAML(v any) string {
	data, err := sigyaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func tplToYAMLPretty(v any) string {
	var data bytes.Buffer
	enc := goyaml.NewEncoder(&data)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(data.String(), "\n")
}

func tplFromYAML(s string) map[string]any {
	m := map[string]any{}
	if err := sigyaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func tplFromYAMLArray(s string) []any {
	a := []any{}
	if err := sigyaml.Unmarshal([]byte(s), &a); err != nil {
		a = []any{err.Error()}
	}
	return a
}

func tplToTOML(v any) string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return err.Error()
	}
	return b.String()
}

func tplFromTOML(s string) map[string]any {
	m := map[string]any{}
	if err := toml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func tplToJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func tplFromJSON(s string) map[string]any {
	m := map[string]any{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func tplFromJSONArray(s string) []any {
	a := []any{}
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		a = []any{err.Error()}
	}
	return a
}
