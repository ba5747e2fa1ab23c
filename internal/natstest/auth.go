package natstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Auth is a decentralized-auth setup made for one test: an operator, one account with
// JetStream, and one user of it whose credentials file is UserCreds (mode 0600).
type Auth struct {
	UserCreds string

	operatorJWT, accountPub, accountJWT, systemPub, systemJWT string
}

// NewAuth writes the user's credentials to dir.
func NewAuth(t testing.TB, dir string) *Auth {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, err := op.PublicKey()
	must(err)
	// JetStream needs a system account for its internal subscriptions.
	sys, err := nkeys.CreateAccount()
	must(err)
	sysPub, err := sys.PublicKey()
	must(err)
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(op)
	must(err)
	oc := jwt.NewOperatorClaims(opPub)
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(op)
	must(err)
	acc, err := nkeys.CreateAccount()
	must(err)
	accPub, err := acc.PublicKey()
	must(err)
	ac := jwt.NewAccountClaims(accPub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(op)
	must(err)
	user, err := nkeys.CreateUser()
	must(err)
	userPub, err := user.PublicKey()
	must(err)
	userJWT, err := jwt.NewUserClaims(userPub).Encode(acc)
	must(err)
	seed, err := user.Seed()
	must(err)
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	must(err)
	a := &Auth{UserCreds: filepath.Join(dir, "user.creds"), operatorJWT: opJWT, accountPub: accPub, accountJWT: accJWT,
		systemPub: sysPub, systemJWT: sysJWT}
	must(os.WriteFile(a.UserCreds, creds, 0o600))
	return a
}
