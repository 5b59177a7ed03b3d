package ec2

import (
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"zdt.dev/zdt/bundle"
)

// applyExtra sets the registration fields of the AMI metadata beyond
// those every bundle has (name, description, architecture, boot mode,
// virtualization, root device, ENA, TPM).
func applyExtra(in *awsec2.RegisterImageInput, m *bundle.AMIConfig) {}
