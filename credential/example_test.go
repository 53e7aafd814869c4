package credential_test

import (
	"context"
	"fmt"

	"github.com/oauthfs/oauthfs/credential"
)

// ExampleErrno shows what a reader of access_token sees for each kind of
// broker error: the one mapping of errors to errnos in oauthfs.
func ExampleErrno() {
	for _, err := range []error{
		fmt.Errorf("broker: %q: %w", "Nope", credential.ErrNotFound),
		fmt.Errorf("broker: GitHub: %w", credential.ErrNotSignedIn),
		fmt.Errorf("broker: GitHub: the refresh token was refused: %w", credential.ErrExpired),
		fmt.Errorf("broker: GitHub: the token endpoint did not answer: %w", credential.ErrUnavailable),
		context.Canceled,
	} {
		fmt.Printf("%v\n\t%v\n", err, credential.Errno(err))
	}
	// Output:
	// broker: "Nope": no such integration
	// 	no such file or directory
	// broker: GitHub: not signed in
	// 	required key not available
	// broker: GitHub: the refresh token was refused: sign-in expired
	// 	key has expired
	// broker: GitHub: the token endpoint did not answer: token unavailable
	// 	input/output error
	// context canceled
	// 	interrupted system call
}
