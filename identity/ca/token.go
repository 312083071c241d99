package ca

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// DefaultMaxTokenBytes bounds a bearer token before it is parsed. Projected
// service account tokens are 1-2 KiB.
const DefaultMaxTokenBytes = 8 << 10

// precheckToken refuses, without asking anyone, a bearer token the
// Authenticator would refuse anyway: not a compact JWS (three base64url
// parts, a JSON header naming an algorithm other than "none", JSON claims),
// no "exp" or already expired, an "aud" that names none of audiences, or a
// "sub" other than subject (when subject is not empty). It
// returns the token's expiry, which bounds how long its review may be
// cached. The signature is not checked: that is the Authenticator's job.
func precheckToken(token string, maxBytes int, audiences []string, subject string, now time.Time) (time.Time, error) {
	if len(token) > maxBytes {
		return time.Time{}, deny(ReasonTokenMalformed, "token of %d bytes, over %d", len(token), maxBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return time.Time{}, deny(ReasonTokenMalformed, "token is not a JWT (%d parts)", len(parts))
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return time.Time{}, deny(ReasonTokenMalformed, "token signature: %v", err)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return time.Time{}, deny(ReasonTokenMalformed, "token header: %v", err)
	}
	if header.Alg == "" || strings.EqualFold(header.Alg, "none") {
		return time.Time{}, deny(ReasonTokenMalformed, "token algorithm %q", header.Alg)
	}
	var claims struct {
		Exp *json.Number    `json:"exp"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return time.Time{}, deny(ReasonTokenMalformed, "token claims: %v", err)
	}
	if claims.Exp == nil {
		return time.Time{}, deny(ReasonTokenMalformed, "token has no exp claim")
	}
	secs, err := claims.Exp.Float64()
	if err != nil || secs <= 0 || secs > 1<<40 {
		return time.Time{}, deny(ReasonTokenMalformed, "token exp %q", claims.Exp.String())
	}
	exp := time.Unix(int64(secs), 0)
	if !now.Before(exp) {
		return time.Time{}, deny(ReasonTokenExpired, "token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	var auds []string
	if len(claims.Aud) > 0 && claims.Aud[0] == '"' {
		var one string
		if err := json.Unmarshal(claims.Aud, &one); err != nil {
			return time.Time{}, deny(ReasonTokenMalformed, "token aud: %v", err)
		}
		auds = []string{one}
	} else if len(claims.Aud) > 0 {
		if err := json.Unmarshal(claims.Aud, &auds); err != nil {
			return time.Time{}, deny(ReasonTokenMalformed, "token aud: %v", err)
		}
	}
	if !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(audiences, a) }) {
		return time.Time{}, deny(ReasonTokenAudience, "token audiences %q do not include %q", auds, audiences)
	}
	if subject != "" && claims.Sub != subject {
		return time.Time{}, deny(ReasonWrongServiceAccount, "token subject %q is not %q", claims.Sub, subject)
	}
	return exp, nil
}

func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}
