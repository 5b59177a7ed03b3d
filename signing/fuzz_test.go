package signing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzStatementOf: attestation envelopes come from the bundle, which
// crossed the air gap. Parsing one never panics, and a statement it accepts
// is JSON.
func FuzzStatementOf(f *testing.F) {
	st := `{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":[],"predicate":{}}`
	env, _ := json.Marshal(map[string]any{"payloadType": "application/vnd.in-toto+json", "payload": base64.StdEncoding.EncodeToString([]byte(st)), "signatures": []any{}})
	f.Add(env)
	f.Add([]byte(`{"payload":"!!"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, envelope []byte) {
		payload, _, err := statementOf(envelope)
		if err == nil && !json.Valid(payload) {
			t.Fatalf("accepted a statement that is not JSON: %q", payload)
		}
	})
}

// FuzzPolicyFile: a policy file never panics the loader; a refusal is a
// policy-file error (CLI exit 2), never anything else.
func FuzzPolicyFile(f *testing.F) {
	f.Add([]byte("apiVersion: zdt.dev/v1alpha1\nkind: TrustPolicy\nkeys: []\n"))
	f.Add([]byte("{}"))
	f.Add([]byte("keys: [{pem: x}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var pol Policy
		if err := pol.loadFile(context.Background(), p); err != nil && !errors.Is(err, ErrPolicyFile) {
			t.Fatalf("refused with a non-policy error: %v", err)
		}
	})
}
