package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestGroupsRefuseUnknownSubcommands: a command that only groups others
// fails on a name it does not have, as the root does, instead of printing
// its help and exiting 0 (a typo in a CI gate would pass); without
// arguments it prints its help.
func TestGroupsRefuseUnknownSubcommands(t *testing.T) {
	groups := 0
	for _, c := range NewRoot().Commands() {
		if !c.HasSubCommands() {
			continue
		}
		groups++
		name := c.Name()
		t.Run(name, func(t *testing.T) {
			root := NewRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs([]string{name, "no-such-subcommand"})
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), `unknown command "no-such-subcommand" for "acgs `+name+`"`) {
				t.Errorf("acgs %s no-such-subcommand: %v, want an unknown command error", name, err)
			}
			root = NewRoot()
			out.Reset()
			root.SetOut(&out)
			root.SetArgs([]string{name})
			if err := root.Execute(); err != nil || !strings.Contains(out.String(), "Available Commands:") {
				t.Errorf("acgs %s: %v, want its help:\n%s", name, err, out.String())
			}
		})
	}
	if groups < 5 {
		t.Fatalf("%d groups of subcommands, want at least 5 (audit, approvals, bundle, policy, regress)", groups)
	}
}
