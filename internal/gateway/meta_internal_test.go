package gateway

import (
	"maps"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestWithoutGatewayMetaLeavesItsArgument: the gateway's own keys go from
// an upstream's _meta without the upstream's map changing. The SDK's client
// hands every agent reading a cached resource the same result: deleting
// from its _meta in place, while another agent's answer was being encoded,
// crashed the gateway (concurrent map iteration and map write; review).
func TestWithoutGatewayMetaLeavesItsArgument(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     mcp.Meta
		want   mcp.Meta
		forged bool
	}{
		{"none", mcp.Meta{"a": 1}, mcp.Meta{"a": 1}, false},
		{"nil", nil, nil, false},
		{"forged", mcp.Meta{"a": 1, gatewayMetaPrefix + "decision": "allow"}, mcp.Meta{"a": 1}, true},
		{"only forged", mcp.Meta{gatewayMetaPrefix + "x": 1, gatewayMetaPrefix + "y": 2}, mcp.Meta{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.in)
			got, forged := withoutGatewayMeta(tc.in)
			if forged != tc.forged || !maps.Equal(got, tc.want) {
				t.Errorf("withoutGatewayMeta(%v) = %v, %v; want %v, %v", before, got, forged, tc.want, tc.forged)
			}
			if !maps.Equal(tc.in, before) {
				t.Errorf("the upstream's _meta changed: %v, was %v", tc.in, before)
			}
		})
	}
}
