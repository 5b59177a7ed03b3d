// Package ec2 registers a bundle's AMI items as EC2 machine images
// (installer.AMIRegistrar; `zdt install --aws-region`). It is the only
// package importing the AWS SDK's EC2 and EBS clients.
//
// Each disk is uploaded as an EBS snapshot with the EBS direct APIs
// (StartSnapshot, PutSnapshotBlock, CompleteSnapshot), as AWS's coldsnap
// does: 512 KiB blocks read from the bundle's verified content stream, all-
// zero blocks skipped, the others sent by a bounded set of workers (a
// handful of 512 KiB buffers in all) with their SHA256 checksums, and the
// snapshot completed with the aggregate checksum (the SHA256 of the
// concatenated block checksums in block order, LINEAR). The snapshot is
// completed only after the content's digest checked at the end of the
// stream; it is then waited for and registered with RegisterImage and the
// item's metadata, its snapshot as the root volume. A failure after
// StartSnapshot deletes the snapshot: no image is registered from an
// incomplete or unverified disk.
//
// Images and snapshots are tagged with the bundle's name, version and root
// digest and the item's name and digest (Tag*). An image registered for the
// same item digest (found by tag, or by its name when a crash left it
// untagged) is reused: a re-run uploads nothing.
package ec2
