
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'edgefn' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'edgefn'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'edgefn' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow')
            [CompletionResult]::new('new', 'new', [CompletionResultType]::ParameterValue, 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml')
            [CompletionResult]::new('dev', 'dev', [CompletionResultType]::ParameterValue, 'Run the project locally: a control plane, a broker and one agent per device, re-applied on every change')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Check edgefn.yaml (and the functions'' test cases) and report every problem found')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Run the functions'' test cases (functions/*/tests/*.yaml), or simulate one message on a device')
            [CompletionResult]::new('invoke', 'invoke', [CompletionResultType]::ParameterValue, 'Call a function once with an event, and print its result: here, or on a device')
            [CompletionResult]::new('package', 'package', [CompletionResultType]::ParameterValue, 'Package each function into a reproducible bundle named by its sha256')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Validate, package, upload what the cloud lacks, and submit a new revision')
            [CompletionResult]::new('diff', 'diff', [CompletionResultType]::ParameterValue, 'Show what applying would change on each device (exit 0: none, 2: changes, 1: error)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the fleet: desired and running revision, state and errors of each device')
            [CompletionResult]::new('history', 'history', [CompletionResultType]::ParameterValue, 'List the revisions applied, newest first, with where they came from')
            [CompletionResult]::new('rollback', 'rollback', [CompletionResultType]::ParameterValue, 'Apply an earlier revision again, as a new revision (default: the one before the latest)')
            [CompletionResult]::new('keygen', 'keygen', [CompletionResultType]::ParameterValue, 'Make an ed25519 key to sign revisions with; prints the public key for agents'' trustedKeys')
            [CompletionResult]::new('device', 'device', [CompletionResultType]::ParameterValue, 'Register, list and remove devices')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)')
            [CompletionResult]::new('secret', 'secret', [CompletionResultType]::ParameterValue, 'Set, list and remove secrets: values functions read as files, kept encrypted by the control plane, never in git')
            [CompletionResult]::new('rollout', 'rollout', [CompletionResultType]::ParameterValue, 'Follow and steer the latest revision''s progressive rollout (`rollout:` in the manifest)')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Save the control plane''s URL and an admin token for later commands')
            [CompletionResult]::new('publish', 'publish', [CompletionResultType]::ParameterValue, 'Send a message to devices, on their local topic (through the cloud''s MQTT broker)')
            [CompletionResult]::new('subscribe', 'subscribe', [CompletionResultType]::ParameterValue, 'Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Show a device''s function log lines (the last ones kept by the cloud), and follow new ones')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;init' {
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Project name (default: the folder''s name)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite files that already exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;new' {
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Language runtime of the function')
            [CompletionResult]::new('--runtime', '--runtime', [CompletionResultType]::ParameterName, 'Language runtime of the function')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest to add the function to (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--trigger', '--trigger', [CompletionResultType]::ParameterName, 'Also bind it, triggered by messages on this topic filter (repeatable)')
            [CompletionResult]::new('--label', '--label', [CompletionResultType]::ParameterName, 'With --trigger or --continuous: bind it to the devices with this label `key=value` (repeatable; default: every device)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite the function''s files if they exist')
            [CompletionResult]::new('--continuous', '--continuous', [CompletionResultType]::ParameterName, 'Also bind it as a continuous function (one instance, restarted when it exits)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;dev' {
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Run only these devices of the manifest (default: all)')
            [CompletionResult]::new('--sandbox', '--sandbox', [CompletionResultType]::ParameterName, 'Where functions run')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address of the local control plane')
            [CompletionResult]::new('--once', '--once', [CompletionResultType]::ParameterName, 'Stop after applying and starting the devices once (for scripts and checks)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;validate' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'How to print problems')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;test' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--sandbox', '--sandbox', [CompletionResultType]::ParameterName, 'Where functions run')
            [CompletionResult]::new('--junit', '--junit', [CompletionResultType]::ParameterName, 'Also write the results as JUnit XML to this file')
            [CompletionResult]::new('--topic', '--topic', [CompletionResultType]::ParameterName, 'Simulate one message on this topic instead of running the cases')
            [CompletionResult]::new('--payload', '--payload', [CompletionResultType]::ParameterName, 'The simulated message''s payload (JSON, or else text)')
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'The device the simulated message arrives on (default: every device)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;invoke' {
            [CompletionResult]::new('--event', '--event', [CompletionResultType]::ParameterName, 'The event''s payload (JSON, or else text; `@FILE` reads it from a file)')
            [CompletionResult]::new('--topic', '--topic', [CompletionResultType]::ParameterName, 'The event''s topic')
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Run it on this registered device, through the control plane: the function (or binding) its current desired state runs there, with the logs it wrote')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'With --device: how long to wait for the device''s answer (at most 60s)')
            [CompletionResult]::new('--as-device', '--as-device', [CompletionResultType]::ParameterName, 'Run it here as on this device of the manifest (its binding''s settings and its values in `env`; default: the first device its first binding selects)')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--sandbox', '--sandbox', [CompletionResultType]::ParameterName, 'Where the function runs')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;package' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write the bundles to this folder as `<sha256>.tar.zst`')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;apply' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--sign-key', '--sign-key', [CompletionResultType]::ParameterName, 'Sign what each device will run with this ed25519 key (PKCS#8 PEM, from `edgefn keygen`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set')
            [CompletionResult]::new('--rollout', '--rollout', [CompletionResultType]::ParameterName, '`none`: every device takes the revision at once, whatever the manifest''s `rollout:` says (default: as the manifest says)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--allow-dirty', '--allow-dirty', [CompletionResultType]::ParameterName, 'Apply even with uncommitted changes (the revision records that it was dirty)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Apply even when it undoes a rollback made with `edgefn rollback` (by applying the commit that was rolled back, or an older one)')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Follow the rollout until every registered device runs the new revision (with a progressive rollout: through its stages; exit 1 when it halts or is aborted)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;diff' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest (default: edgefn.yaml here or in a parent folder)')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;status' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;history' {
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'How many revisions')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;rollback' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--sign-key', '--sign-key', [CompletionResultType]::ParameterName, 'Sign the new revision''s desired states with this ed25519 key (as `edgefn apply --sign-key`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Follow the rollout until every registered device runs it')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;keygen' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Where to write the private key (mode 0600; default: ~/.config/edgefn/signing.key)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite the file if it exists (the old key is lost)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;device' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Register a device and write the one file its agent needs (cloud URL, name, token)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List registered devices')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a device and revoke its token')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;device;add' {
            [CompletionResult]::new('--label', '--label', [CompletionResultType]::ParameterName, 'A label `key=value`, added with the device to edgefn.yaml (repeatable)')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Where to write the agent''s configuration (it holds the token: mode 0600). Default: `devices/NAME.yaml` beside the saved login (`~/.config/edgefn/`), outside the project; a file inside a git work tree is added to its `.gitignore`')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The manifest to add the device to (default: edgefn.yaml here or in a parent folder, if any)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'The manifest to add the device to (default: edgefn.yaml here or in a parent folder, if any)')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite the output file')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;device;list' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;device;remove' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;device;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Register a device and write the one file its agent needs (cloud URL, name, token)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List registered devices')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a device and revoke its token')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;device;help;add' {
            break
        }
        'edgefn;device;help;list' {
            break
        }
        'edgefn;device;help;remove' {
            break
        }
        'edgefn;device;help;help' {
            break
        }
        'edgefn;token' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an admin token and print it, once (the control plane keeps only its hash)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the admin tokens: ids, names, when created, and which one you use; never a token')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke an admin token at once (not the last one: create another first)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;token;create' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;token;list' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;token;revoke' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;token;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an admin token and print it, once (the control plane keeps only its hash)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the admin tokens: ids, names, when created, and which one you use; never a token')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke an admin token at once (not the last one: create another first)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;token;help;create' {
            break
        }
        'edgefn;token;help;list' {
            break
        }
        'edgefn;token;help;revoke' {
            break
        }
        'edgefn;token;help;help' {
            break
        }
        'edgefn;secret' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the secrets: names, versions, when set, which functions and bindings use them; never a value')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a secret''s values (refused while the latest revision uses it)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;secret;set' {
            [CompletionResult]::new('--from-file', '--from-file', [CompletionResultType]::ParameterName, 'Read the value from this file (its exact bytes) instead of stdin')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Follow the rollout the new version starts until every registered device runs it')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;secret;list' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;secret;rm' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;secret;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the secrets: names, versions, when set, which functions and bindings use them; never a value')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a secret''s values (refused while the latest revision uses it)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;secret;help;set' {
            break
        }
        'edgefn;secret;help;list' {
            break
        }
        'edgefn;secret;help;rm' {
            break
        }
        'edgefn;secret;help;help' {
            break
        }
        'edgefn;rollout' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the rollout: state, stage, and each device''s stage and state')
            [CompletionResult]::new('pause', 'pause', [CompletionResultType]::ParameterValue, 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)')
            [CompletionResult]::new('resume', 'resume', [CompletionResultType]::ParameterValue, 'Continue a paused rollout (its stage''s deadline and bake time start again)')
            [CompletionResult]::new('abort', 'abort', [CompletionResultType]::ParameterValue, 'End the rollout: every device goes back to the baseline revision')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;rollout;status' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Then follow the rollout to its end (exit 1 unless it completes)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;rollout;pause' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Then follow the rollout to its end (exit 1 unless it completes)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;rollout;resume' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Then follow the rollout to its end (exit 1 unless it completes)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;rollout;abort' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long `--wait` waits before failing')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Then follow the rollout to its end (exit 1 unless it completes)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;rollout;help' {
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the rollout: state, stage, and each device''s stage and state')
            [CompletionResult]::new('pause', 'pause', [CompletionResultType]::ParameterValue, 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)')
            [CompletionResult]::new('resume', 'resume', [CompletionResultType]::ParameterValue, 'Continue a paused rollout (its stage''s deadline and bake time start again)')
            [CompletionResult]::new('abort', 'abort', [CompletionResultType]::ParameterValue, 'End the rollout: every device goes back to the baseline revision')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;rollout;help;status' {
            break
        }
        'edgefn;rollout;help;pause' {
            break
        }
        'edgefn;rollout;help;resume' {
            break
        }
        'edgefn;rollout;help;abort' {
            break
        }
        'edgefn;rollout;help;help' {
            break
        }
        'edgefn;login' {
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token (default: read from standard input, so it stays out of the shell history)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;publish' {
            [CompletionResult]::new('--label', '--label', [CompletionResultType]::ParameterName, 'Send to every device of the latest manifest with this label `key=value` (repeatable: all must match) instead of one device')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;subscribe' {
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Exit after this many messages')
            [CompletionResult]::new('--reconnect-for', '--reconnect-for', [CompletionResultType]::ParameterName, 'When the control plane goes away, how long to keep trying to reconnect before failing')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print each message as a JSON object (device, topic, payload, ts_ms)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;logs' {
            [CompletionResult]::new('--tail', '--tail', [CompletionResultType]::ParameterName, 'How many of the last lines to show first (the cloud keeps 1000 per device)')
            [CompletionResult]::new('--reconnect-for', '--reconnect-for', [CompletionResultType]::ParameterName, 'With --follow: when the control plane goes away, how long to keep trying to reconnect')
            [CompletionResult]::new('--cloud', '--cloud', [CompletionResultType]::ParameterName, 'Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new lines as they arrive, until Ctrl-C')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new lines as they arrive, until Ctrl-C')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'edgefn;help' {
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow')
            [CompletionResult]::new('new', 'new', [CompletionResultType]::ParameterValue, 'Add a function: a working handler, a sample test case, and its entry in edgefn.yaml')
            [CompletionResult]::new('dev', 'dev', [CompletionResultType]::ParameterValue, 'Run the project locally: a control plane, a broker and one agent per device, re-applied on every change')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Check edgefn.yaml (and the functions'' test cases) and report every problem found')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Run the functions'' test cases (functions/*/tests/*.yaml), or simulate one message on a device')
            [CompletionResult]::new('invoke', 'invoke', [CompletionResultType]::ParameterValue, 'Call a function once with an event, and print its result: here, or on a device')
            [CompletionResult]::new('package', 'package', [CompletionResultType]::ParameterValue, 'Package each function into a reproducible bundle named by its sha256')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Validate, package, upload what the cloud lacks, and submit a new revision')
            [CompletionResult]::new('diff', 'diff', [CompletionResultType]::ParameterValue, 'Show what applying would change on each device (exit 0: none, 2: changes, 1: error)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the fleet: desired and running revision, state and errors of each device')
            [CompletionResult]::new('history', 'history', [CompletionResultType]::ParameterValue, 'List the revisions applied, newest first, with where they came from')
            [CompletionResult]::new('rollback', 'rollback', [CompletionResultType]::ParameterValue, 'Apply an earlier revision again, as a new revision (default: the one before the latest)')
            [CompletionResult]::new('keygen', 'keygen', [CompletionResultType]::ParameterValue, 'Make an ed25519 key to sign revisions with; prints the public key for agents'' trustedKeys')
            [CompletionResult]::new('device', 'device', [CompletionResultType]::ParameterValue, 'Register, list and remove devices')
            [CompletionResult]::new('token', 'token', [CompletionResultType]::ParameterValue, 'Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)')
            [CompletionResult]::new('secret', 'secret', [CompletionResultType]::ParameterValue, 'Set, list and remove secrets: values functions read as files, kept encrypted by the control plane, never in git')
            [CompletionResult]::new('rollout', 'rollout', [CompletionResultType]::ParameterValue, 'Follow and steer the latest revision''s progressive rollout (`rollout:` in the manifest)')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Save the control plane''s URL and an admin token for later commands')
            [CompletionResult]::new('publish', 'publish', [CompletionResultType]::ParameterValue, 'Send a message to devices, on their local topic (through the cloud''s MQTT broker)')
            [CompletionResult]::new('subscribe', 'subscribe', [CompletionResultType]::ParameterValue, 'Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Show a device''s function log lines (the last ones kept by the cloud), and follow new ones')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'edgefn;help;init' {
            break
        }
        'edgefn;help;new' {
            break
        }
        'edgefn;help;dev' {
            break
        }
        'edgefn;help;validate' {
            break
        }
        'edgefn;help;test' {
            break
        }
        'edgefn;help;invoke' {
            break
        }
        'edgefn;help;package' {
            break
        }
        'edgefn;help;apply' {
            break
        }
        'edgefn;help;diff' {
            break
        }
        'edgefn;help;status' {
            break
        }
        'edgefn;help;history' {
            break
        }
        'edgefn;help;rollback' {
            break
        }
        'edgefn;help;keygen' {
            break
        }
        'edgefn;help;device' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Register a device and write the one file its agent needs (cloud URL, name, token)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List registered devices')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a device and revoke its token')
            break
        }
        'edgefn;help;device;add' {
            break
        }
        'edgefn;help;device;list' {
            break
        }
        'edgefn;help;device;remove' {
            break
        }
        'edgefn;help;token' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an admin token and print it, once (the control plane keeps only its hash)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the admin tokens: ids, names, when created, and which one you use; never a token')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke an admin token at once (not the last one: create another first)')
            break
        }
        'edgefn;help;token;create' {
            break
        }
        'edgefn;help;token;list' {
            break
        }
        'edgefn;help;token;revoke' {
            break
        }
        'edgefn;help;secret' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set a new version of a secret (the value from stdin, or --from-file); when the latest revision uses it, a new revision rolls it out')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the secrets: names, versions, when set, which functions and bindings use them; never a value')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove a secret''s values (refused while the latest revision uses it)')
            break
        }
        'edgefn;help;secret;set' {
            break
        }
        'edgefn;help;secret;list' {
            break
        }
        'edgefn;help;secret;rm' {
            break
        }
        'edgefn;help;rollout' {
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show the rollout: state, stage, and each device''s stage and state')
            [CompletionResult]::new('pause', 'pause', [CompletionResultType]::ParameterValue, 'Hold the rollout at its stage until resumed (nothing advances, nothing halts)')
            [CompletionResult]::new('resume', 'resume', [CompletionResultType]::ParameterValue, 'Continue a paused rollout (its stage''s deadline and bake time start again)')
            [CompletionResult]::new('abort', 'abort', [CompletionResultType]::ParameterValue, 'End the rollout: every device goes back to the baseline revision')
            break
        }
        'edgefn;help;rollout;status' {
            break
        }
        'edgefn;help;rollout;pause' {
            break
        }
        'edgefn;help;rollout;resume' {
            break
        }
        'edgefn;help;rollout;abort' {
            break
        }
        'edgefn;help;login' {
            break
        }
        'edgefn;help;publish' {
            break
        }
        'edgefn;help;subscribe' {
            break
        }
        'edgefn;help;logs' {
            break
        }
        'edgefn;help;completions' {
            break
        }
        'edgefn;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
