// Package policies embeds the built-in constitution: an ordinary OPA bundle
// (Rego, data.json, .manifest and Rego tests) that `acgs serve` activates when
// no other bundle is configured. The stock opa CLI ignores this file.
package policies

import "embed"

// FS is the constitution bundle. Its root is the bundle root.
//
//go:embed .manifest acgs
var FS embed.FS
