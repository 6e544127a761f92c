package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/spf13/cobra"

	"github.com/acgs-lite/acgs/internal/datapath"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/readset"
	"github.com/acgs-lite/acgs/policies"
)

func init() { register(newPolicyCmd) }

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Work with policy bundles"}
	cmd.AddCommand(newPolicyTestCmd(), newPolicyReadsetCmd())
	return cmd
}

// loadBundle loads the bundle at path, or the embedded constitution.
func loadBundle(cmd *cobra.Command, path string) (*bundle.Bundle, string, error) {
	var src engine.BundleSource = engine.FSSource{FS: policies.Served, Name: "embedded constitution"} // as acgs serve activates it
	if path != "" {
		src = engine.PathSource{Path: path}
	}
	b, err := src.Load(cmd.Context())
	return b, src.String(), err
}

// newPolicyReadsetCmd prints what each document of a bundle can read of
// the input: the paths decisions are cached on (internal/readset).
func newPolicyReadsetCmd() *cobra.Command {
	var bundlePath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "readset [PATH]",
		Short: "Print the input paths each decision path can read (what its cache key covers)",
		Long: `Print the read set of a decision path (acgs/main/decision or
data.acgs.main.decision), or of every document of the bundle without PATH:
the input paths an evaluation can read, each read whole. Decisions are cached
on these paths only; fields outside them (request ids, timestamps, metadata)
do not change the cache key. "input (whole)" means some construct may read
the whole input, so keys cover every field; a non-deterministic built-in
means the decision is never cached.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, name, err := loadBundle(cmd, bundlePath)
			if err != nil {
				return err
			}
			mods := make(map[string]*ast.Module, len(b.Modules))
			for _, m := range b.Modules {
				mods[m.Path] = m.Parsed
			}
			c := ast.NewCompiler()
			c.Compile(mods)
			if c.Failed() {
				return fmt.Errorf("%s: compile: %w", name, c.Errors)
			}
			an := readset.New(c)
			var refs []ast.Ref
			if len(args) == 1 {
				p := strings.TrimPrefix(args[0], "data.")
				p = strings.ReplaceAll(strings.Trim(p, "/"), ".", "/")
				ref, err := datapath.Parse(p)
				if err != nil {
					return err
				}
				refs = append(refs, ref)
			} else {
				for _, ref := range an.RulePaths() {
					if !isTestDocument(ref) {
						refs = append(refs, ref)
					}
				}
			}
			out := cmd.OutOrStdout()
			var docs []readsetJSON
			for _, ref := range refs {
				rs := an.Analyze(ref)
				if asJSON {
					docs = append(docs, newReadsetJSON(ref, rs))
					continue
				}
				switch {
				case rs.Whole:
					fmt.Fprintf(out, "%s: the whole input (%s)\n", ref, rs.WholeWhy)
				default:
					fmt.Fprintf(out, "%s: %d input paths (%d rules reachable)\n", ref, rs.Size(), rs.Rules)
					for _, p := range rs.Paths {
						fmt.Fprintf(out, "  %s\n", p)
					}
					for _, p := range rs.Types {
						fmt.Fprintf(out, "  type of %s\n", p)
					}
				}
				for _, n := range rs.Nondeterministic {
					fmt.Fprintf(out, "  non-deterministic built-in %s: never cached\n", n)
				}
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(docs)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "bundle directory or .tar.gz (default: the embedded constitution)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

type readsetJSON struct {
	Path             string   `json:"path"`
	WholeInput       bool     `json:"whole_input"`
	WholeWhy         string   `json:"whole_input_why,omitempty"`
	InputPaths       []string `json:"input_paths"`
	TypeOnly         []string `json:"type_only_paths"`
	Nondeterministic []string `json:"nondeterministic_builtins,omitempty"`
	Cached           bool     `json:"cached"`
	Rules            int      `json:"rules"`
}

func newReadsetJSON(ref ast.Ref, rs *readset.Set) readsetJSON {
	j := readsetJSON{Path: ref.String(), WholeInput: rs.Whole, WholeWhy: rs.WholeWhy, InputPaths: []string{}, TypeOnly: []string{},
		Nondeterministic: rs.Nondeterministic, Cached: rs.Cacheable(), Rules: rs.Rules}
	for _, p := range rs.Paths {
		j.InputPaths = append(j.InputPaths, p.String())
	}
	for _, p := range rs.Types {
		j.TypeOnly = append(j.TypeOnly, p.String())
	}
	return j
}

// isTestDocument reports whether ref is in a test package or is a test rule.
func isTestDocument(ref ast.Ref) bool {
	for _, t := range ref[1:] {
		if s, ok := t.Value.(ast.String); ok && (strings.HasSuffix(string(s), "_test") || strings.HasPrefix(string(s), "test_")) {
			return true
		}
	}
	return false
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
