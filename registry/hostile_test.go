package registry

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func bcryptLine(t testing.TB, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h) + "\n"
}

// TestHtpasswdRemovedUserIsRefused: a user removed from the htpasswd file
// can't push from the next request on, though a success of theirs was
// cached — also when the file is rewritten in place to the same size with
// its modification time put back.
func TestHtpasswdRemovedUserIsRefused(t *testing.T) {
	htp := filepath.Join(t.TempDir(), "htpasswd")
	alice, bob := bcryptLine(t, "alice", "pw-a"), bcryptLine(t, "bob", "pw-b")
	if err := os.WriteFile(htp, []byte(alice+bob), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _ := testStore(t)
	srv, _ := serveStore(t, st, htp)
	upload := func(user, pass string) int {
		req, _ := http.NewRequest("POST", "/", nil)
		req.SetBasicAuth(user, pass)
		return do(t, "POST", srv.URL+"/v2/team/app/blobs/uploads/", map[string]string{"Authorization": req.Header.Get("Authorization")}, nil).status
	}
	for _, u := range [][2]string{{"alice", "pw-a"}, {"bob", "pw-b"}, {"bob", "pw-b"}} { // the second bob is cached
		if st := upload(u[0], u[1]); st != 202 {
			t.Fatalf("%s before removal: %d", u[0], st)
		}
	}

	// bob removed by writing a new file and renaming it over the old one.
	tmp := htp + ".new"
	if err := os.WriteFile(tmp, []byte(alice), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, htp); err != nil {
		t.Fatal(err)
	}
	if st := upload("bob", "pw-b"); st != 401 {
		t.Fatalf("removed user bob pushed: %d", st)
	}
	if st := upload("alice", "pw-a"); st != 202 {
		t.Fatalf("alice after bob's removal: %d", st)
	}

	// alice replaced in place by carla: same size, same inode, the
	// modification time set back.
	fi, err := os.Stat(htp)
	if err != nil {
		t.Fatal(err)
	}
	carla := bcryptLine(t, "carla", "pw-c")
	if len(carla) != len(alice) {
		t.Fatalf("test setup: lines of %d and %d bytes", len(carla), len(alice))
	}
	if err := os.WriteFile(htp, []byte(carla), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(htp, time.Time{}, fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st := upload("alice", "pw-a"); st != 401 {
		t.Fatalf("alice replaced in place (same size and mtime) pushed: %d", st)
	}
	if st := upload("carla", "pw-c"); st != 202 {
		t.Fatalf("carla: %d", st)
	}

	// An unreadable file refuses everybody.
	if err := os.Remove(htp); err != nil {
		t.Fatal(err)
	}
	if st := upload("carla", "pw-c"); st != 401 {
		t.Fatalf("htpasswd file gone, carla pushed: %d", st)
	}
}

// TestHostileRequestsGet4xx: requests distribution answered with 500 (one
// body naming a storage path) get the distribution spec's 4xx: a
// repository name over 255 characters (NAME_INVALID), a catalog page
// or tags page starting after a name that is none (?last=%00), and deleting what an
// installed bundle serves (405 UNSUPPORTED). No error body names a path.
func TestHostileRequestsGet4xx(t *testing.T) {
	ctx := context.Background()
	tb := buildBundle(t, bundleSpec{noAMI: true})
	st, store := testStore(t)
	res, err := st.Import(ctx, tb.archive, ImportOptions{})
	if err != nil || !res.ArchiveKept {
		t.Fatalf("import: %+v %v", res, err)
	}
	if err := st.SetActive(tb.archive.Root.Digest); err != nil {
		t.Fatal(err)
	}
	htp := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htp, []byte(bcryptLine(t, "admin", "pw")), 0o600); err != nil {
		t.Fatal(err)
	}
	storeSrv, _ := serveStore(t, st, htp)
	archSrv, _ := serveArchives(t, tb.archive)
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth("admin", "pw")
	admin := map[string]string{"Authorization": req.Header.Get("Authorization")}

	web := findPlacement(t, res.Placements, "library/web", "1.0")
	layer := web.Blobs[len(web.Blobs)-1]
	long := strings.Repeat("a", 256)
	longPath := strings.Repeat("abcdefgh/", 40) + "x" // 361 characters, every component short
	for _, c := range []struct {
		name, method, path string
		hdr                map[string]string
		store, archive     bool // which servers to ask
		status             int
		code               string
	}{
		{"long name manifest", "GET", "/v2/" + long + "/manifests/latest", nil, true, true, 400, "NAME_INVALID"},
		{"long name of short components", "GET", "/v2/" + longPath + "/manifests/latest", nil, true, true, 400, "NAME_INVALID"},
		{"long name tags", "GET", "/v2/" + long + "/tags/list", nil, true, true, 400, "NAME_INVALID"},
		{"long name blob", "GET", "/v2/" + long + "/blobs/" + layer.String(), nil, true, true, 400, "NAME_INVALID"},
		{"long name referrers", "GET", "/v2/" + long + "/referrers/" + layer.String(), nil, true, true, 400, "NAME_INVALID"},
		{"long name upload", "POST", "/v2/" + long + "/blobs/uploads/", admin, true, false, 400, "NAME_INVALID"},
		{"long name manifest put", "PUT", "/v2/" + long + "/manifests/1", admin, true, false, 400, "NAME_INVALID"},
		{"catalog last NUL", "GET", "/v2/_catalog?last=%00", nil, true, true, 400, "NAME_INVALID"},
		{"catalog last slash", "GET", "/v2/_catalog?last=/", nil, true, true, 400, "NAME_INVALID"},
		{"catalog last too long", "GET", "/v2/_catalog?last=" + long, nil, true, true, 400, "NAME_INVALID"},
		{"catalog n negative", "GET", "/v2/_catalog?n=-1", nil, true, true, 400, "PAGINATION_NUMBER_INVALID"},
		{"catalog n not a number", "GET", "/v2/_catalog?n=x", nil, true, true, 400, "PAGINATION_NUMBER_INVALID"},
		{"tags last NUL", "GET", "/v2/" + web.Repository + "/tags/list?last=%00", nil, true, true, 400, "TAG_INVALID"},
		{"tags last slash", "GET", "/v2/" + web.Repository + "/tags/list?last=a/b", nil, true, true, 400, "TAG_INVALID"},
		{"tags last ok", "GET", "/v2/" + web.Repository + "/tags/list?last=0.9", nil, true, true, 200, ""},
		{"delete installed manifest", "DELETE", "/v2/" + web.Repository + "/manifests/" + web.Digest.String(), admin, true, false, 405, "UNSUPPORTED"},
		{"delete installed tag", "DELETE", "/v2/" + web.Repository + "/manifests/" + web.Tag, admin, true, false, 405, "UNSUPPORTED"},
		{"delete installed blob", "DELETE", "/v2/" + web.Repository + "/blobs/" + layer.String(), admin, true, false, 405, "UNSUPPORTED"},
		{"delete on a read-only registry", "DELETE", "/v2/" + web.Repository + "/manifests/" + web.Digest.String(), nil, false, true, 405, "UNSUPPORTED"},
	} {
		for _, srv := range []struct {
			name string
			url  string
			ask  bool
		}{{"store", storeSrv.URL, c.store}, {"archive", archSrv.URL, c.archive}} {
			if !srv.ask {
				continue
			}
			t.Run(c.name+"/"+srv.name, func(t *testing.T) {
				r := do(t, c.method, srv.url+c.path, c.hdr, nil)
				if r.status != c.status || (c.code != "" && errorCode(r.body) != c.code) {
					t.Fatalf("%s %.80s = %d %s, want %d %s", c.method, c.path, r.status, r.body, c.status, c.code)
				}
				for _, leak := range []string{"/docker/registry", store, keptDir + "/", ".zdt"} {
					if bytes.Contains(r.body, []byte(leak)) {
						t.Fatalf("body names %q: %s", leak, r.body)
					}
				}
			})
		}
	}
	// What was refused is still served.
	if code := headManifest(t, storeSrv.URL, web.Repository, web.Tag); code != 200 {
		t.Fatalf("installed manifest after the refused deletes: %d", code)
	}
}

// TestServerErrorBodiesHideDetails: a 5xx body (distribution puts the
// storage error, with its paths, in the detail of UNKNOWN) reaches the
// client as a generic error; the log keeps the detail.
func TestServerErrorBodiesHideDetails(t *testing.T) {
	var logged bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logged, nil))
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/v2/x/manifests/y", nil)
	sw := &serverErrorWriter{ResponseWriter: rec}
	sw.Header().Set("Content-Length", "120")
	sw.WriteHeader(http.StatusInternalServerError)
	sw.Write([]byte(`{"errors":[{"code":"UNKNOWN","detail":"open /var/lib/zdt/registry/docker/registry/v2/x: file name too long"}]}`))
	sw.finish(logger, r)
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "/var/lib") || errorCode(rec.Body.Bytes()) != "UNKNOWN" {
		t.Fatalf("client got %d %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Content-Length") != "" {
		t.Fatal("stale Content-Length kept")
	}
	if !strings.Contains(logged.String(), "/var/lib/zdt/registry/docker/registry/v2/x") {
		t.Fatalf("detail not logged: %s", logged.String())
	}
	// Other statuses pass through untouched.
	rec = httptest.NewRecorder()
	sw = &serverErrorWriter{ResponseWriter: rec}
	sw.Write([]byte("ok"))
	if rec.Code != 200 || rec.Body.String() != "ok" {
		t.Fatalf("200 response changed: %d %q", rec.Code, rec.Body)
	}
}

// FuzzParseHtpasswd: the parser never panics and keeps only bcrypt
// entries.
func FuzzParseHtpasswd(f *testing.F) {
	f.Add([]byte("# comment\n\nalice:$2y$05$abcdefghijklmnopqrstuuJ7Gz5Gz5Gz5Gz5Gz5Gz5Gz5Gz5Gz5G\n"))
	f.Add([]byte("bob:{SHA}xyz\n"))
	f.Add([]byte(":\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		users, err := parseHtpasswd(b)
		if err != nil {
			return
		}
		for u, h := range users {
			if u == "" {
				t.Fatal("empty user accepted")
			}
			if _, err := bcrypt.Cost(h); err != nil {
				t.Fatalf("user %q: non-bcrypt hash accepted", u)
			}
		}
	})
}
