package provider

import "testing"

func TestAccountName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"sub":"abc","email":"alice@example.com"}`, "alice@example.com"},
		{`{"login":"octocat","id":1}`, "octocat"},
		{`{"sub":"248289761001"}`, "248289761001"},
		{`{"email":"a\u001b[2J@x"}`, "a [2J@x"},
		{`{"id":5}`, ""},
		{`not json`, ""},
	} {
		if got := accountName([]byte(tc.in)); got != tc.want {
			t.Errorf("accountName(%s) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
