package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/acgs-lite/acgs/internal/cache"
	"github.com/acgs-lite/acgs/internal/engine"
	"github.com/acgs-lite/acgs/internal/jsoneq"
	"github.com/acgs-lite/acgs/internal/plan"
)

// shopPolicy is a user's own bundle: none of the constitution's packages,
// paths, fields or lists. Its entry point declares plan keys with seeds
// from its own data.
const shopPolicy = `package shop.authz

# METADATA
# entrypoint: true
# scope: document
# custom:
#   plans:
#     input.op:
#       - data: shop.lists.banned
#     input.region: [eu, us]
verdict := {"ok": false, "why": ["banned operation"]} if input.op in data.shop.lists.banned

verdict := {"ok": count(why) == 0, "why": why} if {
	not input.op in data.shop.lists.banned
	why := [msg |
		some check in checks
		check.failed
		msg := check.msg
	]
}

checks := [
	{"failed": input.user.level < data.shop.limits[input.region], "msg": "level too low for the region"},
	{"failed": input.amount > 100 * input.user.level, "msg": "amount over the user's limit"},
	{"failed": input.user.verified != true, "msg": "user not verified"},
]
`

func shopBundle(policy string) fstest.MapFS {
	return fstest.MapFS{
		".manifest":              {Data: []byte(`{"revision":"shop-7","roots":["shop"],"metadata":{"constitutional_hash":"` + hash + `"}}`)},
		"shop/authz/policy.rego": {Data: []byte(policy)},
		"shop/data.json":         {Data: []byte(`{"lists":{"banned":["wipe","export_all","impersonate"]},"limits":{"eu":3,"us":2,"apac":4}}`)},
	}
}

// TestUserBundleGetsEveryFastPath: a bundle with other package names,
// paths and lists gets, with no change to the code, everything the
// constitution gets: its entry point prepared and run on the VM, constant
// plans seeded from its own data, cache keys on what it reads; and every
// decision through those paths equals topdown's full evaluation.
func TestUserBundleGetsEveryFastPath(t *testing.T) {
	ctx := context.Background()
	c, err := cache.New(ctx, cache.Config{L1Size: 10000, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := engine.New(ctx, engine.FSSource{FS: shopBundle(shopPolicy), Name: "shop"}, engine.Options{
		ConstitutionalHash: hash, EvalTimeout: 10 * time.Second, Logger: quiet, Cache: c,
		Compiled: true, PartialEval: true, PlanCacheSize: 1024,
	})
	if err != nil {
		t.Fatal(err)
	}
	const path = "shop/authz/verdict"
	if got := e.Evaluators()[path]; got != "vm" {
		t.Errorf("evaluator of %s: %q, want vm (all: %v)", path, got, e.Evaluators())
	}
	rs, ok := e.ReadSets()[path]
	if !ok || rs.Whole || rs.Size() != 5 {
		t.Errorf("read set of the entry point: %v", rs)
	}
	for _, op := range []string{"wipe", "export_all", "impersonate"} {
		for _, region := range []string{"eu", "us"} {
			in := map[string]any{"op": op, "region": region, "user": map[string]any{"level": 9}}
			if k := e.PlanKind(path, in); k != plan.Constant {
				t.Errorf("%s in %s: plan %q right after activation, want constant (seeded from data.shop.lists.banned)", op, region, k)
			}
		}
	}

	r := rand.New(rand.NewPCG(3, 4))
	ops := []string{"wipe", "export_all", "impersonate", "read", "write", "list"}
	regions := []any{"eu", "us", "apac", "mars", nil}
	sources := map[engine.Source]int{}
	n := 4000
	if testing.Short() {
		n = 1000
	}
	for i := range n {
		in := map[string]any{
			"op":         ops[r.IntN(len(ops))],
			"amount":     r.IntN(1000),
			"user":       map[string]any{"level": r.IntN(6), "verified": r.IntN(3) > 0},
			"request_id": fmt.Sprintf("req-%d", i), // never read: must not defeat the cache
		}
		if reg := regions[r.IntN(len(regions))]; reg != nil {
			in["region"] = reg
		}
		want, err := e.EvaluateFull(ctx, path, in)
		if err != nil {
			t.Fatal(err)
		}
		for pass := range 2 {
			got, err := e.Decide(ctx, path, in)
			if err != nil {
				t.Fatal(err)
			}
			sources[got.Source]++
			if got.Defined != want.Defined || !jsoneq.SameText(got.Result, want.Result) {
				t.Fatalf("input %v pass %d via %v: %v, topdown %v", in, pass, got.Source, got.Result, want.Result)
			}
			in["request_id"] = fmt.Sprintf("req-%d-again", i)
		}
	}
	t.Logf("%d inputs, twice each: %v", n, sources)
	for _, s := range []engine.Source{engine.SourceVM, engine.SourcePlanConstant, engine.SourceL1} {
		if sources[s] == 0 {
			t.Errorf("no decision came from %v: %v", s, sources)
		}
	}
}

// TestMalformedEntryPointAnnotationsAreRefused: a plan declaration the
// engine cannot honour refuses the bundle with a message naming it, as a
// policy that does not compile would, instead of silently losing a path.
func TestMalformedEntryPointAnnotationsAreRefused(t *testing.T) {
	annotated := func(custom string) string {
		return strings.Replace(shopPolicy, "# custom:\n#   plans:\n#     input.op:\n#       - data: shop.lists.banned\n#     input.region: [eu, us]\n", custom, 1)
	}
	cases := []struct{ name, custom, want string }{
		{"plans not a map", "# custom:\n#   plans: [input.op]\n", "must map input refs"},
		{"key not an input ref", "# custom:\n#   plans:\n#     data.x: [1]\n", "is not an input field"},
		{"seed from missing data", "# custom:\n#   plans:\n#     input.op:\n#       - data: shop.lists.nothing\n", "data.shop.lists.nothing is not in the bundle's data"},
		{"seed from an object", "# custom:\n#   plans:\n#     input.op:\n#       - data: shop.limits\n", "holds an object or array"},
		{"seed object with other keys", "# custom:\n#   plans:\n#     input.op:\n#       - value: 1\n", "must be {data: dotted.path}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := annotated(tc.custom)
			if src == shopPolicy {
				t.Fatal("the annotation was not replaced")
			}
			_, err := engine.New(context.Background(), engine.FSSource{FS: shopBundle(src), Name: "shop"}, engine.Options{
				ConstitutionalHash: hash, Logger: quiet, PartialEval: true, PlanCacheSize: 16,
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "shop/authz/verdict") {
				t.Fatalf("error %v, want one naming the entry point and saying %q", err, tc.want)
			}
		})
	}
}
