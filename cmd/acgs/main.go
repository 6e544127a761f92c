// Command acgs is the ACGS-1 Lite policy decision service and its tooling.
package main

import (
	"os"

	"github.com/acgs-lite/acgs/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
