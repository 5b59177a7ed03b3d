package ec2

import (
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/installer"
)

// registerInput is RegisterImage's input for the item's metadata, the
// snapshot its root volume, the bundle's and item's tags on the image.
func registerInput(b installer.AMIBundle, it installer.AMIItem, ami installer.AMI) *awsec2.RegisterImageInput {
	m := it.Content.AMI
	root := m.RootDevice
	if root == "" {
		root = "/dev/xvda"
	}
	in := &awsec2.RegisterImageInput{
		Name:               aws.String(ami.Name),
		Description:        aws.String(m.Description),
		Architecture:       types.ArchitectureValues(m.Architecture),
		VirtualizationType: aws.String(m.Virtualization),
		RootDeviceName:     aws.String(root),
		EnaSupport:         aws.Bool(m.ENA),
		TagSpecifications:  []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: ec2Tags(b, it, ami.SnapshotID)}},
	}
	if m.BootMode != "" {
		in.BootMode = types.BootModeValues(m.BootMode)
	}
	if m.TPM || m.TPMSupport != "" {
		in.TpmSupport = types.TpmSupportValuesV20
	}
	if m.IMDSSupport != "" {
		in.ImdsSupport = types.ImdsSupportValues(m.IMDSSupport)
	}
	if m.SriovNetSupport != "" {
		in.SriovNetSupport = aws.String(m.SriovNetSupport)
	}
	// The root volume is made from the snapshot; the mapping of the
	// metadata (first) says its type and may make it larger.
	rootDev := types.EbsBlockDevice{
		SnapshotId:          aws.String(ami.SnapshotID),
		VolumeSize:          aws.Int32(int32(volumeGiB(it))),
		VolumeType:          types.VolumeTypeGp3,
		DeleteOnTermination: aws.Bool(true),
	}
	var others []types.BlockDeviceMapping
	for _, d := range m.BlockDeviceMappings {
		ebs := types.EbsBlockDevice{DeleteOnTermination: aws.Bool(d.DeleteOnTermination)}
		if d.VolumeType != "" {
			ebs.VolumeType = types.VolumeType(d.VolumeType)
		}
		if d.IOPS > 0 {
			ebs.Iops = aws.Int32(int32(d.IOPS))
		}
		if d.Throughput > 0 {
			ebs.Throughput = aws.Int32(int32(d.Throughput))
		}
		if d.DeviceName == root {
			if d.VolumeSize > int64(*rootDev.VolumeSize) {
				rootDev.VolumeSize = aws.Int32(int32(d.VolumeSize))
			}
			if d.VolumeType != "" {
				rootDev.VolumeType = ebs.VolumeType
			}
			rootDev.Iops, rootDev.Throughput, rootDev.DeleteOnTermination = ebs.Iops, ebs.Throughput, ebs.DeleteOnTermination
			continue
		}
		ebs.VolumeSize = aws.Int32(int32(d.VolumeSize))
		others = append(others, types.BlockDeviceMapping{DeviceName: aws.String(d.DeviceName), Ebs: &ebs})
	}
	in.BlockDeviceMappings = append([]types.BlockDeviceMapping{{DeviceName: aws.String(root), Ebs: &rootDev}}, others...)
	return in
}

// specTags are the metadata's own tags, in key order (zdt's come after
// them, so a spec cannot overwrite them).
func specTags(m *bundle.AMIConfig) [][2]string {
	if m == nil {
		return nil
	}
	var out [][2]string
	for _, k := range slices.Sorted(maps.Keys(m.Tags)) {
		out = append(out, [2]string{k, m.Tags[k]})
	}
	return out
}
