package gateway

import "testing"

func TestExpandHeader(t *testing.T) {
	t.Setenv("GW_TEST_TOKEN", "s3cret")
	for _, tc := range []struct{ in, want string }{
		{"Bearer ${GW_TEST_TOKEN}", "Bearer s3cret"},
		{"abc$def", "abc$def"}, // a literal $ stays
		{"$GW_TEST_TOKEN", "$GW_TEST_TOKEN"},
		{"${GW_TEST_UNSET_VAR}x", "x"},
		{"${not closed", "${not closed"},
		{"a${GW_TEST_TOKEN}b${GW_TEST_TOKEN}", "as3cretbs3cret"},
	} {
		if got := expandHeader(tc.in); got != tc.want {
			t.Errorf("expandHeader(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
