package jsonenc

import "testing"

func TestStringsOutside(t *testing.T) {
	for _, tc := range []struct {
		text string
		want string // the bytes reported outside strings
	}{
		{`{"a":1}`, `{:1}`},
		{`["x\"y",2]`, `[,2]`},
		{`{"k\\":"v\\\"w"}`, `{:}`},
		{`"{[:,]}"`, ``},
		{`[ "a" , "" ]`, `[  ,  ]`},
	} {
		var s Strings
		var got []byte
		for i := 0; i < len(tc.text); i++ {
			if s.Outside(tc.text[i]) {
				got = append(got, tc.text[i])
			}
		}
		if string(got) != tc.want {
			t.Errorf("%s: outside strings %q, want %q", tc.text, got, tc.want)
		}
	}
}
