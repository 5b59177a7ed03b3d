package hashcount

import (
	"crypto/sha256"
	"testing"
)

func TestCount(t *testing.T) {
	before := SHA256()
	stop := Start()
	h := SHA256()
	h.Write(make([]byte, 1000))
	h.Write([]byte("abc"))
	before.Write(make([]byte, 50)) // made before Start: not counted
	if n := stop(); n != 1003 {
		t.Fatalf("counted %d bytes, want 1003", n)
	}
	if got, want := h.Sum(nil), sha256.Sum256(append(make([]byte, 1000), "abc"...)); string(got) != string(want[:]) {
		t.Fatalf("counting changed the hash")
	}
	if _, ok := SHA256().(*counting); ok {
		t.Fatal("still counting after stop")
	}
}
