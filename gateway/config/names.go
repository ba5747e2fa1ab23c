package config

import (
	"fmt"
	"regexp"
)

// A function's name goes into API paths, MQTT topics, metric labels and store keys, so one
// rule holds wherever a name is chosen: the config, the API and the CLI.
var functionName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// CheckFunctionName refuses a name that a new function may not have.
func CheckFunctionName(name string) error {
	if functionName.MatchString(name) {
		return nil
	}
	return fmt.Errorf("%q is not a valid function name: use lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters", name)
}

// sinkName is the rule for sink names, which appear only in logs, metrics and the API's
// answers.
var sinkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
