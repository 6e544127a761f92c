package vm

// SharedFuncs names the functions of q's program that findShared marked
// shared across evaluations, and says whether q shares them (Prepare
// registered a trigger on its store).
func SharedFuncs(q *Query) (names []string, armed bool) {
	for _, fn := range q.p.prog.funcs {
		if fn.shared >= 0 {
			names = append(names, fn.name)
		}
	}
	return names, q.p.memo != nil
}

// AllFuncs names every function of q's program.
func AllFuncs(q *Query) (names []string) {
	for _, fn := range q.p.prog.funcs {
		names = append(names, fn.name)
	}
	return names
}

// Disarm stops q sharing the values of data-only rules (as on a store
// without a trigger), for comparisons.
func Disarm(q *Query) { q.p.memo = nil }
