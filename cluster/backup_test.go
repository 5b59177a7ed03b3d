package cluster

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// TestSnapshotChecksum: an etcd snapshot stream is accepted only whole:
// a database of bbolt pages followed by its sha256. A damaged byte, a
// truncated stream and a stream without the trailer are refused, however
// the stream is cut into writes.
func TestSnapshotChecksum(t *testing.T) {
	db := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4 KiB
	sum := sha256.Sum256(db)
	good := append(append([]byte(nil), db...), sum[:]...)
	damaged := append([]byte(nil), good...)
	damaged[100] ^= 1
	for name, c := range map[string]struct {
		stream []byte
		ok     bool
	}{
		"whole":                  {good, true},
		"damaged":                {damaged, false},
		"truncated":              {good[:len(good)-1], false},
		"no trailer":             {db, false},
		"empty":                  {nil, false},
		"trailer of other bytes": {append(append([]byte(nil), db...), bytes.Repeat([]byte{1}, 32)...), false},
	} {
		for _, chunk := range []int{1, 7, 31, 32, 33, 4096, 1 << 20} {
			cw := &checksumWriter{h: sha256.New()}
			for p := c.stream; len(p) > 0; {
				n := min(chunk, len(p))
				cw.Write(p[:n])
				p = p[n:]
			}
			if err := cw.check(int64(len(c.stream))); (err == nil) != c.ok {
				t.Errorf("%s in writes of %d: check = %v, want ok %v", name, chunk, err, c.ok)
			}
		}
	}
}

func helmRecord(t testing.TB, json string) []byte {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(json))
	zw.Close()
	return []byte(base64.StdEncoding.EncodeToString(gz.Bytes()))
}

// TestDecodeRelease: a Helm release record from a storage Secret is read
// (gzip or plain JSON) and its manifest returned; a gzip bomb stops at
// maxReleaseSize; garbage is an error, never a panic.
func TestDecodeRelease(t *testing.T) {
	m, err := decodeRelease(helmRecord(t, `{"name":"r","manifest":"---\nkind: ConfigMap\n"}`))
	if err != nil || m != "---\nkind: ConfigMap\n" {
		t.Fatalf("decodeRelease = %q, %v", m, err)
	}
	if m, err := decodeRelease([]byte(base64.StdEncoding.EncodeToString([]byte(`{"manifest":"x"}`)))); err != nil || m != "x" {
		t.Fatalf("plain JSON record = %q, %v", m, err)
	}
	bomb := helmRecord(t, `{"manifest":"`+strings.Repeat("a", maxReleaseSize+10)+`"}`)
	if _, err := decodeRelease(bomb); err == nil || !strings.Contains(err.Error(), "decompressed") {
		t.Fatalf("a record decompressing past the bound: %v", err)
	}
	for _, bad := range []string{"", "!!!", base64.StdEncoding.EncodeToString([]byte{0x1f, 0x8b, 0x08, 0}), base64.StdEncoding.EncodeToString([]byte("[1]"))} {
		if _, err := decodeRelease([]byte(bad)); err == nil {
			t.Errorf("decodeRelease(%q) accepted", bad)
		}
	}
}

func FuzzDecodeRelease(f *testing.F) {
	f.Add(helmRecord(f, `{"manifest":"---\nkind: ConfigMap\n"}`))
	f.Add([]byte("e30="))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := decodeRelease(raw)
		if err != nil {
			return
		}
		if len(m) > maxReleaseSize {
			t.Fatalf("a manifest of %d bytes passed the bound", len(m))
		}
		manifestObjects(m) // the export's parse of it never panics
	})
}

// TestManifestObjects: a release manifest's objects are listed by
// apiVersion, kind, name and namespace; an object without them is refused.
func TestManifestObjects(t *testing.T) {
	objs, err := manifestObjects("---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: other\n---\n# empty\n---\napiVersion: zdt.dev/v1\nkind: Widget\nmetadata: {name: w}\n")
	if err != nil || len(objs) != 2 || objs[0].Metadata.Namespace != "other" || objs[1].Kind != "Widget" {
		t.Fatalf("manifestObjects = %+v, %v", objs, err)
	}
	if _, err := manifestObjects("apiVersion: v1\nkind: ConfigMap\n"); err == nil {
		t.Fatal("an object without a name was accepted")
	}
}

// TestPrintableComment: a kind or name crafted with line breaks cannot end the
// comment of the objects backup and add documents to it.
func TestPrintableComment(t *testing.T) {
	got := printable("release a revision 1: X\n---\napiVersion: v1\r\nkind: Secret\u2028x")
	if strings.ContainsAny(got, "\n\r\u2028") {
		t.Fatalf("printable kept a line break: %q", got)
	}
	if !strings.Contains(got, "kind: Secret") {
		t.Fatalf("printable lost the text: %q", got)
	}
}
