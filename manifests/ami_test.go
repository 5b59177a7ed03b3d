package manifests

import (
	"reflect"
	"testing"
)

// TestParseAMIMetadata: every AMI metadata field (#16) is parsed with its
// position; deleteOnTermination is nil when absent.
func TestParseAMIMetadata(t *testing.T) {
	s, err := Parse("zdt.yaml", []byte(`apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: d, version: "1"}
components:
  - name: nodes
    amis:
      - name: node
        source: https://images.example/node.vhd
        format: vhd
        size: 1024
        sriovNetSupport: simple
        imdsSupport: v2.0
        blockDeviceMappings:
          - {deviceName: /dev/xvda, volumeSize: 20, volumeType: io2, iops: 4000, deleteOnTermination: false}
          - deviceName: /dev/sdb
            volumeSize: 100
        tags: {Team: platform, Name: node}
`))
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := AMI{Name: "node", Source: "https://images.example/node.vhd", Format: "vhd", Size: 1024, SriovNetSupport: "simple", IMDSSupport: "v2.0",
		BlockDeviceMappings: []BlockDevice{
			{DeviceName: "/dev/xvda", VolumeSize: 20, VolumeType: "io2", IOPS: 4000, DeleteOnTermination: &no, Pos: Pos{14, 13}},
			{DeviceName: "/dev/sdb", VolumeSize: 100, Pos: Pos{15, 13}},
		},
		Tags: map[string]string{"Team": "platform", "Name": "node"}, Pos: Pos{7, 9}}
	if got := s.Components[0].AMIs[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}
