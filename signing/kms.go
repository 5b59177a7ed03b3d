package signing

// KMS providers for --key URIs, the same set the cosign CLI registers:
// awskms://, gcpkms://, azurekms:// and hashivault://. Each reads its
// credentials the way cosign does (environment, instance metadata).
import (
	_ "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/azure"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/gcp"
	_ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
)
