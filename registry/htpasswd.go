package registry

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// maxHtpasswdSize bounds the htpasswd file read.
const maxHtpasswdSize = 4 << 20

// authCacheTTL is how long a checked password is trusted without running
// bcrypt again (while the file does not change).
const authCacheTTL = 5 * time.Minute

// htpasswd checks Basic credentials against an htpasswd file of bcrypt
// entries. The file is stat'ed on every check and read again when it
// changed (inode, size, modification or change time, or a change too
// recent to trust the timestamps), which also forgets every cached
// success: a user removed from the file is refused from the next request
// on. Safe for concurrent use.
type htpasswd struct {
	path string

	mu    sync.Mutex
	stat  os.FileInfo // of the file as last read
	read  time.Time   // when it was read
	sum   [32]byte    // its content's hash
	users map[string][]byte
	ok    map[[32]byte]time.Time // credentials → when their check expires
}

// dummyHash is compared against for unknown users, so that they cost what
// known users cost (made on first use: bcrypt is slow on purpose).
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("zdt-unknown-user"), bcrypt.DefaultCost)
	return h
})

func newHtpasswd(path string) (*htpasswd, error) {
	h := &htpasswd{path: path, ok: map[[32]byte]time.Time{}}
	if _, err := h.current(); err != nil {
		return nil, err
	}
	return h, nil
}

// current returns the users of the file as it is now, reading it again
// when it changed. Call with mu held, or before h is shared.
func (h *htpasswd) current() (map[string][]byte, error) {
	fi, err := os.Stat(h.path)
	if err != nil {
		return nil, err
	}
	if h.stat != nil && os.SameFile(fi, h.stat) && fi.Size() == h.stat.Size() &&
		fi.ModTime().Equal(h.stat.ModTime()) && changeTime(fi).Equal(changeTime(h.stat)) &&
		h.read.After(fi.ModTime().Add(racyWindow)) && h.read.After(changeTime(fi).Add(racyWindow)) {
		return h.users, nil
	}
	f, err := os.Open(h.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return nil, err
	}
	read := time.Now()
	b, err := io.ReadAll(io.LimitReader(f, maxHtpasswdSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxHtpasswdSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", h.path, maxHtpasswdSize)
	}
	sum := sha256.Sum256(b)
	if sum != h.sum || h.users == nil {
		users, err := parseHtpasswd(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.path, err)
		}
		h.users, h.sum = users, sum
		clear(h.ok)
	}
	h.stat, h.read = fi, read
	return h.users, nil
}

// parseHtpasswd reads "user:bcrypt-hash" lines; blank lines and lines
// starting with # are skipped. Entries of other hash schemes are refused
// (distribution's registry supports only bcrypt too).
func parseHtpasswd(b []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxHtpasswdSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("line %d: not user:hash", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (user %q): not a bcrypt hash (htpasswd -B)", n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

// errBadCredentials: unknown user or wrong password.
var errBadCredentials = errors.New("invalid username or password")

// check reports whether user and pass are in the file as it is now.
func (h *htpasswd) check(user, pass string) error {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	h.mu.Lock()
	users, err := h.current()
	if err != nil {
		h.mu.Unlock()
		return fmt.Errorf("reading htpasswd file: %w", err)
	}
	if exp, hit := h.ok[key]; hit && time.Now().Before(exp) {
		h.mu.Unlock()
		return nil
	}
	hash, known := users[user]
	sum := h.sum
	h.mu.Unlock()
	if !known {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte(pass))
		return errBadCredentials
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return errBadCredentials
	}
	h.mu.Lock()
	if h.sum == sum { // not changed while bcrypt ran
		h.ok[key] = time.Now().Add(authCacheTTL)
	}
	h.mu.Unlock()
	return nil
}
