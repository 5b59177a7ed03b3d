package signing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
)

// VerifyArchiveFile checks the sigstore bundle that `create --key` wrote for
// an archive file (ArchiveBundlePath) against the policy's keys: the bundle's
// digest must be the file's sha256 and its signature must verify with a
// trusted key. It is what `cosign verify-blob --new-bundle-format` checks,
// and reads the whole file once.
func VerifyArchiveFile(ctx context.Context, archive, bundlePath string, p Policy) error {
	b, err := readBounded(bundlePath)
	if err != nil {
		return fmt.Errorf("reading %s: %v: %w", bundlePath, err, ErrUnsigned)
	}
	var pb protobundle.Bundle
	if err := protojson.Unmarshal(b, &pb); err != nil {
		return fmt.Errorf("%s: %v: %w", bundlePath, err, ErrBadSignature)
	}
	ms := pb.GetMessageSignature()
	if ms == nil || ms.GetMessageDigest().GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 {
		return fmt.Errorf("%s: no sha256 message signature: %w", bundlePath, ErrBadSignature)
	}
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: f}); err != nil {
		return fmt.Errorf("hashing %s: %w", archive, err)
	}
	sum := h.Sum(nil)
	if !bytes.Equal(sum, ms.GetMessageDigest().GetDigest()) {
		return fmt.Errorf("%s has sha256 %x, %s signs %x: %w", archive, sum, bundlePath, ms.GetMessageDigest().GetDigest(), ErrWrongDigest)
	}
	if len(p.Keys) == 0 {
		return fmt.Errorf("%s: %w", bundlePath, ErrNoPolicy)
	}
	for _, k := range p.Keys {
		err := k.verifier.VerifySignature(bytes.NewReader(ms.GetSignature()), nil, options.WithDigest(sum), options.WithContext(ctx))
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: signature of %s does not verify with %s: %w", bundlePath, archive, p.describe(), ErrUntrusted)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
