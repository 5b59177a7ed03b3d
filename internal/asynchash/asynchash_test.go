package asynchash

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// TestSameAsSerial: Write, Buffer+Hand and Wait give the digest a serial
// hash of the same bytes gives.
func TestSameAsSerial(t *testing.T) {
	data := bytes.Repeat([]byte("zdt asynchash "), 500_000) // ~7 MiB, several chunks
	h := sha256.New()
	a := New(h)
	a.Write(data[:100])
	rest := data[100:]
	for len(rest) > 0 {
		b := a.Buffer()
		n := copy(b, rest)
		a.Hand(b[:n])
		rest = rest[n:]
	}
	a.Wait()
	a.Wait() // twice is fine
	if n, _ := a.Write([]byte("after")); n != 5 {
		t.Fatalf("Write after Wait reported %d bytes", n)
	}
	want := sha256.Sum256(data)
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("digest %x, want %x", got, want)
	}
}
