package sink

import (
	"strings"
	"testing"

	"github.com/moongate/moongate/sync/store/storetest"
)

func TestConfigErrors(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	h := func(c Config) Config { c.Name = "x"; return c }
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{HTTP: &HTTPConfig{URL: "http://h/"}}, "name is empty"},
		{h(Config{}), "exactly one of http, mqtt and jetstream"},
		{h(Config{JetStream: &JetStreamConfig{}}), "jetstream: url is empty"},
		{h(Config{JetStream: &JetStreamConfig{URL: "nats://h:4222", Subject: "a.*"}}), "wildcards"},
		{h(Config{JetStream: &JetStreamConfig{URL: "gopher://h"}}), "scheme must be nats or tls"},
		{h(Config{HTTP: &HTTPConfig{URL: "http://h/", Format: "xml"}}), `format "xml"`},
		{h(Config{HTTP: &HTTPConfig{URL: "http://h/", Auth: HTTPAuth{AWSSigV4: &AWSSigV4{}}}}), "region is required"},
		{h(Config{HTTP: &HTTPConfig{URL: "http://h/", Auth: HTTPAuth{AWSSigV4: &AWSSigV4{Region: "r"}, OAuth2: &OAuth2ClientCredentials{TokenURL: "http://t", ClientID: "c", ClientSecret: "s"}}}}), "at most one"},
		{h(Config{HTTP: &HTTPConfig{URL: "http://h/"}, MQTT: &MQTTConfig{Broker: "tcp://h:1883"}}), "exactly one"},
		{h(Config{HTTP: &HTTPConfig{URL: "ftp://h/"}}), "scheme must be http or https"},
		{h(Config{HTTP: &HTTPConfig{URL: "https:///x"}}), "no host"},
		{h(Config{HTTP: &HTTPConfig{URL: "http://h/", Gzip: "yes"}}), `gzip "yes"`},
		{h(Config{HTTP: &HTTPConfig{URL: "http://h/", CertFile: "c.pem"}}), "cert_file and key_file"},
		{h(Config{MQTT: &MQTTConfig{}}), "broker is empty"},
		{h(Config{MQTT: &MQTTConfig{Broker: "tcp://h:1883", QoS: 2}}), "only 1"},
		{h(Config{MQTT: &MQTTConfig{Broker: "tcp://h:1883", Topic: "a/#"}}), "wildcards"},
		{h(Config{MQTT: &MQTTConfig{Broker: "tcp://h:1883", TLS: TLSFiles{Key: "k"}}}), "cert and key"},
		{h(Config{MQTT: &MQTTConfig{Broker: "tcp://h:1883", TLS: TLSFiles{CA: "ca.pem"}}}), "plain connection"},
		{h(Config{MQTT: &MQTTConfig{Broker: "gopher://h"}}), "unknown scheme"},
	} {
		_, err := New(tc.cfg, st, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestDisabledSink(t *testing.T) {
	st := storetest.Open(t, t.TempDir())
	defer st.Close()
	cfg := httpConfig("http://127.0.0.1:1/")
	cfg.Disabled = true
	s := newSink(t, cfg, st, nil, nil)
	appendN(t, st, "a", 0, 10)
	stop := run(t, s)
	stop()
	if _, ok := st.Stats().Consumers["cloud"]; ok {
		t.Error("a disabled sink registered as a consumer")
	}
	if st := s.Status(); st.State != Disabled || st.PendingRecords != 0 {
		t.Errorf("status %+v", st)
	}
}
