package readset

import (
	"strings"
	"testing"
)

func TestMinimal(t *testing.T) {
	got := minimal([]Path{{"b"}, {"a", "x"}, {"a"}, {"a", 0}, {"c", 1, "d"}, {"c", 1}, {"c", "1"}, {"b"}})
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	want := "input.a input.b input.c[1] input.c[\"1\"]"
	if strings.Join(s, " ") != want {
		t.Errorf("got %v, want %s", s, want)
	}
}

func TestCovers(t *testing.T) {
	s := &Set{Paths: []Path{{"a"}, {"b", "c"}}}
	for _, tc := range []struct {
		other *Set
		want  bool
	}{
		{&Set{}, true},
		{&Set{Paths: []Path{{"a", "x"}, {"b", "c"}}}, true},
		{&Set{Paths: []Path{{"b"}}}, false},
		{&Set{Paths: []Path{{"b", "d"}}}, false},
		{&Set{Whole: true}, false},
	} {
		if got := s.Covers(tc.other); got != tc.want {
			t.Errorf("Covers(%v) = %v, want %v", tc.other.Paths, got, tc.want)
		}
	}
	if !(&Set{Whole: true}).Covers(&Set{Whole: true}) {
		t.Errorf("the whole input does not cover itself")
	}
}
