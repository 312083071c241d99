package catest

import (
	"encoding/base64"
	"encoding/json"
	"time"
)

// Audience is the token audience the Env's CA expects.
const Audience = "ambit-ca"

// FarFuture is the expiry of Token's tokens.
var FarFuture = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

// NodeAToken is the Env's token of the node account bound to "node-a".
var NodeAToken = Token("node-a")

// Token is a JWT-shaped bearer token for the fake Authenticator: subject
// sub, audience Audience, expiring at FarFuture, with a signature nobody
// checks. The same sub gives the same token.
func Token(sub string) string { return TokenFor(sub, FarFuture, Audience) }

// TokenFor is Token with an expiry and audiences of the caller's choice.
func TokenFor(sub string, exp time.Time, audiences ...string) string {
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." +
		enc(map[string]any{"sub": sub, "aud": audiences, "exp": exp.Unix()}) + "." +
		base64.RawURLEncoding.EncodeToString([]byte("not-a-signature-"+sub))
}
