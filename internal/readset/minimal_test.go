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
