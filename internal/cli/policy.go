package cli

import (
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/policies"
)

func init() { register(newPolicyCmd) }

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Work with policy bundles"}
	cmd.AddCommand(newPolicyTestCmd())
	return cmd
}

// newPolicyTestCmd runs a bundle's Rego tests with OPA's own test runner, so
// results match `opa test` of the same OPA version.
func newPolicyTestCmd() *cobra.Command {
	var bundlePath, run string
	var verbose bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Run the Rego unit tests of the bundle (the embedded constitution by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var src engine.BundleSource = engine.FSSource{FS: policies.FS, Name: "embedded constitution"}
			if bundlePath != "" {
				src = engine.PathSource{Path: bundlePath}
			}
			b, err := src.Load(cmd.Context())
			if err != nil {
				return err
			}
			mods := make(map[string]*ast.Module, len(b.Modules))
			for _, m := range b.Modules {
				mods[m.Path] = m.Parsed
			}
			data := b.Data
			if data == nil {
				data = map[string]any{}
			}
			store := inmem.NewFromObject(data)
			txn, err := store.NewTransaction(cmd.Context(), storage.TransactionParams{})
			if err != nil {
				return err
			}
			defer store.Abort(cmd.Context(), txn)
			runner := tester.NewRunner().SetStore(store).SetModules(mods).SetTimeout(timeout)
			if run != "" {
				runner = runner.Filter(run)
			}
			ch, err := runner.RunTests(cmd.Context(), txn)
			if err != nil {
				return err
			}
			var results []*tester.Result
			failed := 0
			for r := range ch {
				if r.Fail || r.Error != nil {
					failed++
				}
				results = append(results, r)
			}
			rep := tester.PrettyReporter{Output: cmd.OutOrStdout(), Verbose: verbose}
			resCh := make(chan *tester.Result, len(results))
			for _, r := range results {
				resCh <- r
			}
			close(resCh)
			if err := rep.Report(resCh); err != nil {
				return err
			}
			if len(results) == 0 {
				return &ExitError{Code: 1, Err: fmt.Errorf("no tests found in %s", src)}
			}
			if failed > 0 {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "bundle directory or .tar.gz (default: the embedded constitution)")
	cmd.Flags().StringVar(&run, "run", "", "run only tests matching this regular expression")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every test")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "timeout of each test")
	return cmd
}
