package charts

import (
	"zdt.dev/zdt/internal/testregistry"
)

var chartDir = testregistry.ChartDir

var writeFile = testregistry.WriteFile
