package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/moongate/moongate/mqtt"
)

// passwdCmd adds a device to the embedded broker's password file, changes its password,
// or with -D removes it, like mosquitto_passwd. The password is asked twice on a
// terminal, or read from the first line of standard input: never from the command line,
// where other users could read it.
func passwdCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("passwd", stderr)
	remove := fs.Bool("D", false, "delete the user")
	pos, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: moongate passwd [-D] FILE USER")
	}
	file, user := pos[0], pos[1]
	if *remove {
		if err := mqtt.SetPassword(file, user, ""); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s from %s\n", user, file)
		return nil
	}
	password, err := readNewPassword(stderr)
	if err != nil {
		return err
	}
	if err := mqtt.SetPassword(file, user, password); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "set the password of %s in %s (the gateway reloads the file by itself)\n", user, file)
	return nil
}

func readNewPassword(prompt io.Writer) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read the password: %w", err)
		}
		if pw := strings.TrimRight(line, "\r\n"); pw != "" {
			return pw, nil
		}
		return "", usagef("no password on standard input")
	}
	fmt.Fprint(prompt, "Password: ")
	first, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return "", fmt.Errorf("read the password: %w", err)
	}
	fmt.Fprint(prompt, "Again: ")
	again, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return "", fmt.Errorf("read the password: %w", err)
	}
	if string(first) != string(again) {
		return "", usagef("the passwords differ")
	}
	if len(first) == 0 {
		return "", usagef("empty password")
	}
	return string(first), nil
}
