
use builtin;
use str;

set edit:completion:arg-completer[edgefn] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'edgefn'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'edgefn'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand init 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
            cand new 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
            cand dev 'Run the project locally: a control plane, a broker and one agent per device, re-applied on every change'
            cand validate 'Check edgefn.yaml (and the functions'' test cases) and report every problem found'
            cand test 'Run the functions'' test cases (functions/*/tests/*.yaml), or simulate one message on a device'
            cand invoke 'Call a function once with an event, and print its result: here, or on a device'
            cand package 'Package each function into a reproducible bundle named by its sha256'
            cand apply 'Validate, package, upload what the cloud lacks, and submit a new revision'
            cand diff 'Show what applying would change on each device (exit 0: none, 2: changes, 1: error)'
            cand status 'Show the fleet: desired and running revision, state and errors of each device'
            cand history 'List the revisions applied, newest first, with where they came from'
            cand rollback 'Apply an earlier revision again, as a new revision (default: the one before the latest)'
            cand keygen 'Make an ed25519 key to sign revisions with; prints the public key for agents'' trustedKeys'
            cand device 'Register, list and remove devices'
            cand token 'Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)'
            cand secret 'Set, list and remove secrets: values functions read as files, kept encrypted by the control plane, never in git'
            cand rollout 'Follow and steer the latest revision''s progressive rollout (`rollout:` in the manifest)'
            cand login 'Save the control plane''s URL and an admin token for later commands'
            cand publish 'Send a message to devices, on their local topic (through the cloud''s MQTT broker)'
            cand subscribe 'Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C'
            cand logs 'Show a device''s function log lines (the last ones kept by the cloud), and follow new ones'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;init'= {
            cand --name 'Project name (default: the folder''s name)'
            cand --force 'Overwrite files that already exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;new'= {
            cand -r 'Language runtime of the function'
            cand --runtime 'Language runtime of the function'
            cand -f 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)'
            cand --trigger 'Also bind it, triggered by messages on this topic filter (repeatable)'
            cand --label 'With --trigger or --continuous: bind it to the devices with this label `key=value` (repeatable; default: every device)'
            cand --force 'Overwrite the function''s files if they exist'
            cand --continuous 'Also bind it as a continuous function (one instance, restarted when it exits)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;dev'= {
            cand --device 'Run only these devices of the manifest (default: all)'
            cand --sandbox 'Where functions run'
            cand --listen 'Address of the local control plane'
            cand --once 'Stop after applying and starting the devices once (for scripts and checks)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;validate'= {
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --format 'How to print problems'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;test'= {
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --sandbox 'Where functions run'
            cand --junit 'Also write the results as JUnit XML to this file'
            cand --topic 'Simulate one message on this topic instead of running the cases'
            cand --payload 'The simulated message''s payload (JSON, or else text)'
            cand --device 'The device the simulated message arrives on (default: every device)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;invoke'= {
            cand --event 'The event''s payload (JSON, or else text; `@FILE` reads it from a file)'
            cand --topic 'The event''s topic'
            cand --device 'Run it on this registered device, through the control plane: the function (or binding) its current desired state runs there, with the logs it wrote'
            cand --timeout 'With --device: how long to wait for the device''s answer (at most 60s)'
            cand --as-device 'Run it here as on this device of the manifest (its binding''s settings and its values in `env`; default: the first device its first binding selects)'
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --sandbox 'Where the function runs'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;package'= {
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --out 'Write the bundles to this folder as `<sha256>.tar.zst`'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;apply'= {
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --sign-key 'Sign what each device will run with this ed25519 key (PKCS#8 PEM, from `edgefn keygen`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set'
            cand --rollout '`none`: every device takes the revision at once, whatever the manifest''s `rollout:` says (default: as the manifest says)'
            cand --output 'Output format'
            cand --allow-dirty 'Apply even with uncommitted changes (the revision records that it was dirty)'
            cand --force 'Apply even when it undoes a rollback made with `edgefn rollback` (by applying the commit that was rolled back, or an older one)'
            cand --wait 'Follow the rollout until every registered device runs the new revision (with a progressive rollout: through its stages; exit 1 when it halts or is aborted)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;diff'= {
            cand -f 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --file 'The manifest (default: edgefn.yaml here or in a parent folder)'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;status'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;history'= {
            cand --limit 'How many revisions'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;rollback'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --sign-key 'Sign the new revision''s desired states with this ed25519 key (as `edgefn apply --sign-key`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set'
            cand --output 'Output format'
            cand --wait 'Follow the rollout until every registered device runs it'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;keygen'= {
            cand --out 'Where to write the private key (mode 0600; default: ~/.config/edgefn/signing.key)'
            cand --force 'Overwrite the file if it exists (the old key is lost)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;device'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Register a device and write the one file its agent needs (cloud URL, name, token)'
            cand list 'List registered devices'
            cand remove 'Remove a device and revoke its token'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;device;add'= {
            cand --label 'A label `key=value`, added with the device to edgefn.yaml (repeatable)'
            cand --out 'Where to write the agent''s configuration (it holds the token: mode 0600). Default: `devices/NAME.yaml` beside the saved login (`~/.config/edgefn/`), outside the project; a file inside a git work tree is added to its `.gitignore`'
            cand -f 'The manifest to add the device to (default: edgefn.yaml here or in a parent folder, if any)'
            cand --file 'The manifest to add the device to (default: edgefn.yaml here or in a parent folder, if any)'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --force 'Overwrite the output file'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;device;list'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;device;remove'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;device;help'= {
            cand add 'Register a device and write the one file its agent needs (cloud URL, name, token)'
            cand list 'List registered devices'
            cand remove 'Remove a device and revoke its token'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;device;help;add'= {
        }
        &'edgefn;device;help;list'= {
        }
        &'edgefn;device;help;remove'= {
        }
        &'edgefn;device;help;help'= {
        }
        &'edgefn;token'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Create an admin token and print it, once (the control plane keeps only its hash)'
            cand list 'List the admin tokens: ids, names, when created, and which one you use; never a token'
            cand revoke 'Revoke an admin token at once (not the last one: create another first)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;token;create'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;token;list'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;token;revoke'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;token;help'= {
            cand create 'Create an admin token and print it, once (the control plane keeps only its hash)'
            cand list 'List the admin tokens: ids, names, when created, and which one you use; never a token'
            cand revoke 'Revoke an admin token at once (not the last one: create another first)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;token;help;create'= {
        }
        &'edgefn;token;help;list'= {
        }
        &'edgefn;token;help;revoke'= {
        }
        &'edgefn;token;help;help'= {
        }
        &'edgefn;secret'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out'
            cand list 'List the secrets: names, versions, when set, which functions and bindings use them; never a value'
            cand rm 'Remove a secret''s values (refused while the latest revision uses it)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;secret;set'= {
            cand --from-file 'Read the value from this file (its exact bytes) instead of stdin'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --output 'Output format'
            cand --wait 'Follow the rollout the new version starts until every registered device runs it'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;secret;list'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --output 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;secret;rm'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;secret;help'= {
            cand set 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out'
            cand list 'List the secrets: names, versions, when set, which functions and bindings use them; never a value'
            cand rm 'Remove a secret''s values (refused while the latest revision uses it)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;secret;help;set'= {
        }
        &'edgefn;secret;help;list'= {
        }
        &'edgefn;secret;help;rm'= {
        }
        &'edgefn;secret;help;help'= {
        }
        &'edgefn;rollout'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand status 'Show the rollout: state, stage, and each device''s stage and state'
            cand pause 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)'
            cand resume 'Continue a paused rollout (its stage''s deadline and bake time start again)'
            cand abort 'End the rollout: every device goes back to the baseline revision'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;rollout;status'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --output 'Output format'
            cand --wait 'Then follow the rollout to its end (exit 1 unless it completes)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;rollout;pause'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --output 'Output format'
            cand --wait 'Then follow the rollout to its end (exit 1 unless it completes)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;rollout;resume'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --output 'Output format'
            cand --wait 'Then follow the rollout to its end (exit 1 unless it completes)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;rollout;abort'= {
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --timeout 'How long `--wait` waits before failing'
            cand --output 'Output format'
            cand --wait 'Then follow the rollout to its end (exit 1 unless it completes)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;rollout;help'= {
            cand status 'Show the rollout: state, stage, and each device''s stage and state'
            cand pause 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)'
            cand resume 'Continue a paused rollout (its stage''s deadline and bake time start again)'
            cand abort 'End the rollout: every device goes back to the baseline revision'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;rollout;help;status'= {
        }
        &'edgefn;rollout;help;pause'= {
        }
        &'edgefn;rollout;help;resume'= {
        }
        &'edgefn;rollout;help;abort'= {
        }
        &'edgefn;rollout;help;help'= {
        }
        &'edgefn;login'= {
            cand --cloud 'Control plane URL'
            cand --token 'Admin token (default: read from standard input, so it stays out of the shell history)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;publish'= {
            cand --label 'Send to every device of the latest manifest with this label `key=value` (repeatable: all must match) instead of one device'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;subscribe'= {
            cand --count 'Exit after this many messages'
            cand --reconnect-for 'When the control plane goes away, how long to keep trying to reconnect before failing'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand --json 'Print each message as a JSON object (device, topic, payload, ts_ms)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;logs'= {
            cand --tail 'How many of the last lines to show first (the cloud keeps 1000 per device)'
            cand --reconnect-for 'With --follow: when the control plane goes away, how long to keep trying to reconnect'
            cand --cloud 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]'
            cand --token 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]'
            cand -f 'Keep printing new lines as they arrive, until Ctrl-C'
            cand --follow 'Keep printing new lines as they arrive, until Ctrl-C'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;completions'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'edgefn;help'= {
            cand init 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow'
            cand new 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml'
            cand dev 'Run the project locally: a control plane, a broker and one agent per device, re-applied on every change'
            cand validate 'Check edgefn.yaml (and the functions'' test cases) and report every problem found'
            cand test 'Run the functions'' test cases (functions/*/tests/*.yaml), or simulate one message on a device'
            cand invoke 'Call a function once with an event, and print its result: here, or on a device'
            cand package 'Package each function into a reproducible bundle named by its sha256'
            cand apply 'Validate, package, upload what the cloud lacks, and submit a new revision'
            cand diff 'Show what applying would change on each device (exit 0: none, 2: changes, 1: error)'
            cand status 'Show the fleet: desired and running revision, state and errors of each device'
            cand history 'List the revisions applied, newest first, with where they came from'
            cand rollback 'Apply an earlier revision again, as a new revision (default: the one before the latest)'
            cand keygen 'Make an ed25519 key to sign revisions with; prints the public key for agents'' trustedKeys'
            cand device 'Register, list and remove devices'
            cand token 'Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)'
            cand secret 'Set, list and remove secrets: values functions read as files, kept encrypted by the control plane, never in git'
            cand rollout 'Follow and steer the latest revision''s progressive rollout (`rollout:` in the manifest)'
            cand login 'Save the control plane''s URL and an admin token for later commands'
            cand publish 'Send a message to devices, on their local topic (through the cloud''s MQTT broker)'
            cand subscribe 'Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C'
            cand logs 'Show a device''s function log lines (the last ones kept by the cloud), and follow new ones'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'edgefn;help;init'= {
        }
        &'edgefn;help;new'= {
        }
        &'edgefn;help;dev'= {
        }
        &'edgefn;help;validate'= {
        }
        &'edgefn;help;test'= {
        }
        &'edgefn;help;invoke'= {
        }
        &'edgefn;help;package'= {
        }
        &'edgefn;help;apply'= {
        }
        &'edgefn;help;diff'= {
        }
        &'edgefn;help;status'= {
        }
        &'edgefn;help;history'= {
        }
        &'edgefn;help;rollback'= {
        }
        &'edgefn;help;keygen'= {
        }
        &'edgefn;help;device'= {
            cand add 'Register a device and write the one file its agent needs (cloud URL, name, token)'
            cand list 'List registered devices'
            cand remove 'Remove a device and revoke its token'
        }
        &'edgefn;help;device;add'= {
        }
        &'edgefn;help;device;list'= {
        }
        &'edgefn;help;device;remove'= {
        }
        &'edgefn;help;token'= {
            cand create 'Create an admin token and print it, once (the control plane keeps only its hash)'
            cand list 'List the admin tokens: ids, names, when created, and which one you use; never a token'
            cand revoke 'Revoke an admin token at once (not the last one: create another first)'
        }
        &'edgefn;help;token;create'= {
        }
        &'edgefn;help;token;list'= {
        }
        &'edgefn;help;token;revoke'= {
        }
        &'edgefn;help;secret'= {
            cand set 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out'
            cand list 'List the secrets: names, versions, when set, which functions and bindings use them; never a value'
            cand rm 'Remove a secret''s values (refused while the latest revision uses it)'
        }
        &'edgefn;help;secret;set'= {
        }
        &'edgefn;help;secret;list'= {
        }
        &'edgefn;help;secret;rm'= {
        }
        &'edgefn;help;rollout'= {
            cand status 'Show the rollout: state, stage, and each device''s stage and state'
            cand pause 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)'
            cand resume 'Continue a paused rollout (its stage''s deadline and bake time start again)'
            cand abort 'End the rollout: every device goes back to the baseline revision'
        }
        &'edgefn;help;rollout;status'= {
        }
        &'edgefn;help;rollout;pause'= {
        }
        &'edgefn;help;rollout;resume'= {
        }
        &'edgefn;help;rollout;abort'= {
        }
        &'edgefn;help;login'= {
        }
        &'edgefn;help;publish'= {
        }
        &'edgefn;help;subscribe'= {
        }
        &'edgefn;help;logs'= {
        }
        &'edgefn;help;completions'= {
        }
        &'edgefn;help;help'= {
        }
    ]
    $completions[$command]
}
