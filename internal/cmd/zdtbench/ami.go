package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"zdt.dev/zdt/internal/mototest"
)

// The ami-register row's disk: a 4 GiB sparse raw image holding 512 MiB
// of random data in 64 extents of 8 MiB, 64 MiB apart (1024 non-zero
// 512 KiB blocks).
const (
	amiDiskSize   = 4 << 30
	amiExtent     = 8 << 20
	amiExtents    = 64
	amiBlockSize  = 512 << 10
	amiDataBlocks = amiExtents * amiExtent / amiBlockSize
)

// amiRegisterRow is `zdt install --aws-region --aws-endpoint` of a bundle
// holding the row's disk against moto's server, reset before every run
// (so every run uploads and registers): seconds to a registered AMI, the
// blocks uploaded (checked against the non-zero blocks, by zdt's report
// and by listing the snapshot's blocks in moto) and zdt's peak RSS.
func (b *bench) amiRegisterRow() *Row {
	dir := b.out("ami")
	disk, spec, archive := filepath.Join(dir, "node.raw"), filepath.Join(dir, "ami.yaml"), filepath.Join(dir, "ami.zdt")
	root := filepath.Join(dir, "root")
	var moto *mototest.Server
	row := &Row{
		Name:  "ami-register",
		Title: fmt.Sprintf("install --aws-region against moto's server: a %s sparse raw disk holding %s of data uploaded as an EBS snapshot (EBS direct APIs) and registered", humanBytes(amiDiskSize), humanBytes(amiExtents*amiExtent)),
		Bytes: amiExtents * amiExtent,
		Goals: []Goal{rssUnder(128 * mib)},
	}
	row.Setup = func(ctx context.Context) error {
		if why := mototest.Available(); why != "" {
			return fmt.Errorf("moto's server: %s", why)
		}
		if err := writeAMIDisk(disk); err != nil {
			return err
		}
		y := fmt.Sprintf("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: bench-ami, version: \"1.0\"}\ncomponents:\n  - name: node\n    amis:\n      - {name: bench-node, source: %s, architecture: x86_64, bootMode: uefi, ena: true}\n", disk)
		if err := os.WriteFile(spec, []byte(y), 0o644); err != nil {
			return err
		}
		os.Remove(archive)
		if _, err := b.execProc(ctx, nil, b.zdt, "bundle", "create", "-f", spec, "-o", archive, "--no-cache"); err != nil {
			return err
		}
		var err error
		moto, err = mototest.Launch()
		return err
	}
	row.Teardown = func(context.Context) error {
		if moto != nil {
			moto.Stop()
		}
		return os.RemoveAll(dir)
	}
	c := &Cmd{Role: RoleZdt, Label: "zdt",
		Display: "zdt install --bundle $WORK/out/ami/ami.zdt --root $WORK/out/ami/root --insecure-skip-signature --aws-region us-east-1 --aws-endpoint http://127.0.0.1:PORT  (moto's server, reset before each run)"}
	c.Before = func(context.Context, int) error {
		if err := moto.Reset(); err != nil {
			return err
		}
		return os.RemoveAll(root)
	}
	c.Run = func(ctx context.Context, _ int) (Sample, error) {
		cmd := exec.CommandContext(ctx, b.zdt, "install", "--bundle", archive, "--root", root, "--insecure-skip-signature",
			"--aws-region", mototest.Region, "--aws-endpoint", moto.URL, "--output", "json")
		cmd.Env = append(os.Environ(), mototest.Env()...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		start := time.Now()
		err := cmd.Run()
		s := Sample{Wall: time.Since(start)}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.RSS = ru.Maxrss * 1024
		}
		if err != nil {
			return s, fmt.Errorf("zdt install: %w: %s", err, tail(errb.Bytes()))
		}
		var res struct {
			AMIs []struct {
				ImageID    string `json:"imageId"`
				SnapshotID string `json:"snapshotId"`
				Blocks     int64  `json:"blocks"`
			} `json:"amis"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.AMIs) != 1 {
			return s, fmt.Errorf("zdt install registered no ami: %v: %s", err, tail(out.Bytes()))
		}
		a := res.AMIs[0]
		listed, err := snapshotBlocks(moto.URL, a.SnapshotID)
		if err != nil {
			return s, err
		}
		if a.Blocks != amiDataBlocks || listed != amiDataBlocks {
			return s, fmt.Errorf("zdt uploaded %d blocks, moto's snapshot holds %d: want the %d non-zero blocks", a.Blocks, listed, amiDataBlocks)
		}
		row.Note = fmt.Sprintf("Blocks uploaded: %d, the disk's non-zero 512 KiB blocks (%d of %d; moto's snapshot lists %d); image %s. "+
			"moto keeps every block in its own memory (not counted: the RSS is zdt's).", a.Blocks, amiDataBlocks, amiDiskSize/amiBlockSize, listed, a.ImageID)
		return s, nil
	}
	row.Cmds = []*Cmd{c}
	return row
}

func tail(b []byte) string {
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(bytes.TrimSpace(b))
}

// writeAMIDisk writes the row's disk once (kept between runs of the row).
func writeAMIDisk(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == amiDiskSize {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(amiDiskSize); err != nil {
		return err
	}
	rng := rand.New(rand.NewChaCha8([32]byte{'a', 'm', 'i'}))
	buf := make([]byte, amiExtent)
	for i := range amiExtents {
		for j := 0; j < len(buf); j += 8 {
			v := rng.Uint64() | 1
			for k := range 8 {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if _, err := f.WriteAt(buf, int64(i)*(amiDiskSize/amiExtents)); err != nil {
			return err
		}
	}
	return f.Sync()
}

// snapshotBlocks counts a snapshot's blocks in moto (EBS
// ListSnapshotBlocks, sent as is: moto checks no signature).
func snapshotBlocks(url, snap string) (int, error) {
	req, _ := http.NewRequest("GET", url+"/snapshots/"+snap+"/blocks", nil)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/"+mototest.Region+"/ebs/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct{ Blocks []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("listing the blocks of %s: %s: %w", snap, resp.Status, err)
	}
	return len(out.Blocks), nil
}
