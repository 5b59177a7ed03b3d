package ec2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"golang.org/x/sync/errgroup"
)

// BlockSize is the EBS direct APIs' block size: every block sent is
// exactly this long (the last one of a disk padded with zeros).
const BlockSize = 512 << 10

var zeroBlock [BlockSize]byte

// blockTimeout bounds one block's upload, retries included.
const blockTimeout = 5 * time.Minute

// BlockError is a block the EBS direct APIs refused (its checksum, say).
type BlockError struct {
	Snapshot string
	Index    int32
	Err      error
}

func (e *BlockError) Error() string {
	return fmt.Sprintf("block %d (offset %d) of snapshot %s: %v", e.Index, int64(e.Index)*BlockSize, e.Snapshot, e.Err)
}

func (e *BlockError) Unwrap() error { return e.Err }

// blockSum is one uploaded block's SHA256.
type blockSum struct {
	index int32
	sum   [sha256.Size]byte
}

// putBlocks reads the disk from r in BlockSize blocks and sends every
// block that is not all zeros to the snapshot, concurrently (workers
// uploads at a time, workers+2 buffers). It returns the uploaded blocks'
// checksums in block order, once r ended without error (the content's
// digest checked).
func putBlocks(ctx context.Context, api EBSAPI, snapshot string, r io.Reader, size int64, workers int, uploaded *atomic.Int64) ([]blockSum, error) {
	g, gctx := errgroup.WithContext(ctx)
	pool := make(chan []byte, workers+2)
	for range workers + 2 {
		pool <- make([]byte, BlockSize)
	}
	type block struct {
		index int32
		buf   []byte
	}
	work := make(chan block)
	var mu sync.Mutex
	var sums []blockSum
	g.Go(func() error {
		defer close(work)
		var off int64
		for index := int32(0); ; index++ {
			var buf []byte
			select {
			case buf = <-pool:
			case <-gctx.Done():
				return gctx.Err()
			}
			n, err := io.ReadFull(r, buf)
			last := false
			switch {
			case err == io.EOF:
				if off != size {
					return fmt.Errorf("disk ended at %d bytes, %d recorded", off, size)
				}
				return nil
			case err == io.ErrUnexpectedEOF: // the last, short block: padded
				clear(buf[n:])
				last = true
			case err != nil:
				return err
			}
			off += int64(n)
			if bytes.Equal(buf, zeroBlock[:]) {
				pool <- buf
			} else {
				select {
				case work <- block{index, buf}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if last {
				if off != size {
					return fmt.Errorf("disk ended at %d bytes, %d recorded", off, size)
				}
				return nil
			}
		}
	})
	for range workers {
		g.Go(func() error {
			for b := range work {
				s := blockSum{index: b.index, sum: sha256.Sum256(b.buf)}
				// A stuck endpoint fails the block (after the SDK's
				// retries) rather than the install hanging.
				bctx, cancel := context.WithTimeout(gctx, blockTimeout)
				_, err := api.PutSnapshotBlock(bctx, &ebs.PutSnapshotBlockInput{
					SnapshotId:        aws.String(snapshot),
					BlockIndex:        aws.Int32(b.index),
					BlockData:         bytes.NewReader(b.buf),
					DataLength:        aws.Int32(BlockSize),
					Checksum:          aws.String(base64.StdEncoding.EncodeToString(s.sum[:])),
					ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
				})
				cancel()
				pool <- b.buf
				if err != nil {
					return &BlockError{Snapshot: snapshot, Index: b.index, Err: err}
				}
				uploaded.Add(1)
				mu.Lock()
				sums = append(sums, s)
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		// A block's own error rather than the cancellation it caused.
		return nil, err
	}
	sort.Slice(sums, func(i, j int) bool { return sums[i].index < sums[j].index })
	return sums, nil
}

// aggregateChecksum is the LINEAR aggregate of the block checksums: the
// base64 SHA256 of their concatenation (raw digests) in block order.
func aggregateChecksum(sums []blockSum) string {
	h := sha256.New()
	for _, s := range sums {
		h.Write(s.sum[:])
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

var errNoSnapshotID = errors.New("StartSnapshot returned no snapshot id")
