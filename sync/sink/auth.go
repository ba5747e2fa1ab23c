package sink

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/google"
)

// HTTPAuth authenticates every request of an HTTP sink; at most one field is
// set. Headers (e.g. a static Authorization) still apply.
type HTTPAuth struct {
	AWSSigV4      *AWSSigV4
	OAuth2        *OAuth2ClientCredentials
	GoogleIDToken *GoogleIDToken
}

// AWSSigV4 signs each request with AWS Signature Version 4, e.g. for a
// Lambda function URL with AuthType AWS_IAM. Without AccessKeyID the
// credentials come from the AWS SDK's default chain: the AWS_* environment
// variables, then the shared config and credentials files (Profile, or
// AWS_PROFILE), then the instance's role.
type AWSSigV4 struct {
	Region          string // required, e.g. eu-west-1
	Service         string // default "lambda"
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string // for temporary credentials
	Profile         string
}

// OAuth2ClientCredentials sends a bearer token from the OAuth 2.0 client
// credentials grant (RFC 6749 §4.4), e.g. from Azure AD (Entra ID) or
// Keycloak. The token is fetched again a minute before it expires, and at
// once when the receiver answers 401.
type OAuth2ClientCredentials struct {
	TokenURL     string
	ClientID     string
	ClientSecret string
	// ClientSecretFile holds the secret instead; it must not be readable by
	// group or others.
	ClientSecretFile string
	Scopes           []string
}

// GoogleIDToken sends a Google-signed ID token for Audience (the Cloud Run
// or Cloud Functions URL), minted from a service account key file, which
// must not be readable by group or others.
type GoogleIDToken struct {
	Audience        string
	CredentialsFile string
}

// earlyRefresh is how long before its expiry a bearer token is replaced, so
// that no request leaves with a token that expires on the way.
const earlyRefresh = time.Minute

// An authorizer adds credentials to a request once its body is final.
type authorizer interface {
	// authorize signs or authorizes req, whose body on the wire is body. The
	// grant it returns is handed back to refused.
	authorize(ctx context.Context, req *http.Request, body []byte) (grant, error)
	// refused is told that a request authorized with g was answered status
	// (401 or 403); it drops cached credentials that may be stale and
	// reports whether to resend at once.
	refused(g grant, status int) bool
}

// A grant identifies the credentials a request was sent with.
type grant struct {
	gen   uint64 // of the token source
	fresh bool   // the source was made because a token was refused
}

func (c *HTTPAuth) check() error {
	n := 0
	var errs []error
	if a := c.AWSSigV4; a != nil {
		n++
		if a.Region == "" {
			errs = append(errs, errors.New("aws_sigv4: region is required"))
		}
		if (a.AccessKeyID == "") != (a.SecretAccessKey == "") {
			errs = append(errs, errors.New("aws_sigv4: access_key_id and secret_access_key go together"))
		}
	}
	if o := c.OAuth2; o != nil {
		n++
		if o.TokenURL == "" || o.ClientID == "" {
			errs = append(errs, errors.New("oauth2_client_credentials: token_url and client_id are required"))
		}
		if (o.ClientSecret == "") == (o.ClientSecretFile == "") {
			errs = append(errs, errors.New("oauth2_client_credentials: set one of client_secret and client_secret_file"))
		}
	}
	if g := c.GoogleIDToken; g != nil {
		n++
		if g.Audience == "" || g.CredentialsFile == "" {
			errs = append(errs, errors.New("google_id_token: audience and credentials_file are required"))
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("set at most one of aws_sigv4, oauth2_client_credentials and google_id_token"))
	}
	return errors.Join(errs...)
}

// newAuthorizer prepares c's scheme; nil when there is none. Secret files
// are read now, so a bad file fails the config check.
func newAuthorizer(c HTTPAuth, timeout time.Duration, tlsCfg *tls.Config) (authorizer, error) {
	// The token endpoints are reached like the receiver: its CA bundle, its timeout.
	client := &http.Client{Timeout: timeout}
	if tlsCfg != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: tlsCfg.RootCAs, Certificates: tlsCfg.Certificates}
		client.Transport = tr
	}
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	switch {
	case c.AWSSigV4 != nil:
		return newSigV4(c.AWSSigV4)
	case c.OAuth2 != nil:
		o := c.OAuth2
		secret := o.ClientSecret
		if o.ClientSecretFile != "" {
			b, err := readSecretFile(o.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("oauth2_client_credentials: %w", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		cc := &clientcredentials.Config{ClientID: o.ClientID, ClientSecret: secret, TokenURL: o.TokenURL, Scopes: o.Scopes}
		return newBearer(func() oauth2.TokenSource {
			fetch := oauth2.TokenSource(tokenFunc(func() (*oauth2.Token, error) { return cc.Token(tokenCtx) }))
			return oauth2.ReuseTokenSourceWithExpiry(nil, fetch, earlyRefresh)
		}), nil
	case c.GoogleIDToken != nil:
		g := c.GoogleIDToken
		key, err := readSecretFile(g.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("google_id_token: %w", err)
		}
		jc, err := google.JWTConfigFromJSON(key)
		if err != nil {
			return nil, fmt.Errorf("google_id_token: %s: %w", g.CredentialsFile, err)
		}
		// The service account's signed assertion asks for an ID token
		// for the audience instead of an access token.
		jc.PrivateClaims = map[string]any{"target_audience": g.Audience}
		jc.UseIDToken = true
		return newBearer(func() oauth2.TokenSource {
			// jwt's own cache renews 10 s before expiry; this one a minute before.
			return oauth2.ReuseTokenSourceWithExpiry(nil, jc.TokenSource(tokenCtx), earlyRefresh)
		}), nil
	}
	return nil, nil
}

// authError is a failure to get credentials: the receiver was not asked,
// and the sink backs off as if it had refused them.
type authError struct{ err error }

func (e authError) Error() string { return e.err.Error() }
func (e authError) Unwrap() error { return e.err }

type tokenFunc func() (*oauth2.Token, error)

func (f tokenFunc) Token() (*oauth2.Token, error) { return f() }

// readSecretFile reads a file that holds a secret, refusing one that group
// or others may read: a secret readable by every user is no secret.
func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %04o lets group or others read it; chmod 600 it", path, m)
	}
	return os.ReadFile(path)
}

// bearer sends "Authorization: Bearer <token>" from a caching token source,
// which it replaces when a token is refused.
type bearer struct {
	newSource func() oauth2.TokenSource

	mu    sync.Mutex
	src   oauth2.TokenSource
	gen   uint64
	fresh bool
}

func newBearer(newSource func() oauth2.TokenSource) *bearer {
	return &bearer{newSource: newSource, src: newSource()}
}

func (a *bearer) authorize(_ context.Context, req *http.Request, _ []byte) (grant, error) {
	a.mu.Lock()
	src, g := a.src, grant{gen: a.gen, fresh: a.fresh}
	a.mu.Unlock()
	tok, err := src.Token()
	if err != nil {
		return g, authError{fmt.Errorf("token: %w", err)}
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	return g, nil
}

// refused drops the token the request was sent with, so the next request
// fetches one; the request is resent at once unless its token was already
// fetched after a refusal, when the receiver gets the usual backoff.
func (a *bearer) refused(g grant, status int) bool {
	if status != http.StatusUnauthorized {
		return false // the token is good, its rights are not: a new one would not help
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if g.gen == a.gen {
		a.src, a.gen, a.fresh = a.newSource(), a.gen+1, true
	}
	return !g.fresh
}

// sigV4 signs requests with the AWS SDK's signer, over the body as sent.
type sigV4 struct {
	cfg    *AWSSigV4
	creds  aws.CredentialsProvider
	signer *v4.Signer
	now    func() time.Time // the signing time; a seam for the test vectors
	// hashHeader sends the payload hash as X-Amz-Content-Sha256 too, as
	// a function URL behind CloudFront's origin access control requires.
	hashHeader bool
}

func newSigV4(c *AWSSigV4) (*sigV4, error) {
	s := &sigV4{cfg: c, signer: v4.NewSigner(), now: time.Now, hashHeader: true}
	if c.AccessKeyID != "" {
		s.creds = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
		return s, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(c.Region)}
	if c.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(c.Profile))
	}
	ac, err := awsconfig.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("aws_sigv4: %w", err)
	}
	s.creds = ac.Credentials // a cache over the default chain
	return s, nil
}

func (s *sigV4) authorize(ctx context.Context, req *http.Request, body []byte) (grant, error) {
	creds, err := s.creds.Retrieve(ctx)
	if err != nil {
		return grant{}, authError{fmt.Errorf("aws credentials: %w", err)}
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if s.hashHeader {
		req.Header.Set("X-Amz-Content-Sha256", hash)
	}
	if err := s.signer.SignHTTP(ctx, creds, req, hash, s.cfg.Service, s.cfg.Region, s.now()); err != nil {
		return grant{}, fmt.Errorf("sigv4: %w", err)
	}
	return grant{}, nil
}

// refused forgets cached temporary credentials, which may have expired (AWS
// answers an expired session token with 403); the request waits the
// backoff, since the same keys would be refused again.
func (s *sigV4) refused(grant, int) bool {
	if c, ok := s.creds.(*aws.CredentialsCache); ok {
		c.Invalidate()
	}
	return false
}
