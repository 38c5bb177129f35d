<?php
// This file is part of vessel-sync's companion plugin for Moodle - http://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <http://www.gnu.org/licenses/>.

namespace local_vesselsync\external;

use core_external\external_api;
use core_external\external_function_parameters;
use core_external\external_multiple_structure;
use core_external\external_single_structure;
use core_external\external_value;
use local_vesselsync\resolver;

defined('MOODLE_INTERNAL') || die();

require_once($CFG->libdir . '/completionlib.php');
require_once($CFG->libdir . '/gradelib.php');

/**
 * local_vesselsync_apply_progress: activity completions and grades in bulk, each with the time
 * the learner made it, through Moodle's completion and grade APIs (events, caches and course
 * completion follow as for any change). Newer wins, decided per record inside its own
 * transaction against what this Moodle holds: a record older than the value here, or of the
 * same second, keeps this Moodle's value. Every record gets an outcome; one that cannot be
 * applied (no such learner, course or activity, not enrolled, tracking off, a locked grade)
 * is "held" with the reason, and the others go on.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class apply_progress extends external_api {
    /** Records one call may carry. */
    const MAX_RECORDS = 1000;

    /** @var array learner and course pairs whose activity completions changed in this call */
    private static array $touched = [];

    /**
     * Parameters.
     *
     * @return external_function_parameters
     */
    public static function execute_parameters(): external_function_parameters {
        return new external_function_parameters([
            'records' => new external_multiple_structure(new external_single_structure([
                'ref' => new external_value(PARAM_ALPHANUMEXT, 'The caller\'s reference, returned with the outcome'),
                'kind' => new external_value(PARAM_ALPHA, 'completion or grade'),
                'course' => new external_value(PARAM_RAW, 'Course idnumber, else shortname'),
                'activity' => new external_value(PARAM_RAW, 'Course-module idnumber, else MODNAME:NAME'),
                'user' => new external_value(PARAM_RAW, 'Learner idnumber, else username'),
                'value' => new external_value(PARAM_RAW, 'Completion state (0 or 1) or raw grade'),
                'time' => new external_value(PARAM_INT, 'When the learner made the progress (Unix time)'),
                'source' => new external_value(PARAM_RAW, 'Where the record comes from (a vessel id)'),
                'actor' => new external_value(PARAM_RAW, 'Who made it there, as the source names them', VALUE_DEFAULT, ''),
                'knownvalue' => new external_value(PARAM_RAW, 'The value the caller last wrote here for this key', VALUE_DEFAULT, ''),
                'knowntime' => new external_value(PARAM_INT, 'The progress time of that value', VALUE_DEFAULT, 0),
                'knownwritten' => new external_value(PARAM_INT, 'When the caller wrote it', VALUE_DEFAULT, 0),
            ])),
        ]);
    }

    /**
     * Applies the records, each in its own transaction.
     *
     * @param array $records
     * @return array one outcome per record, in order
     */
    public static function execute(array $records): array {
        global $DB;
        $params = self::validate_parameters(self::execute_parameters(), ['records' => $records]);
        $context = \context_system::instance();
        self::validate_context($context);
        require_capability('local/vesselsync:applyprogress', $context);
        if (count($params['records']) > self::MAX_RECORDS) {
            throw new \invalid_parameter_exception('at most ' . self::MAX_RECORDS . ' records per call');
        }
        $resolver = new resolver();
        $out = [];
        self::$touched = [];
        foreach ($params['records'] as $r) {
            $tx = $DB->start_delegated_transaction();
            try {
                $result = self::apply_one($r, $resolver);
                $tx->allow_commit();
            } catch (\dml_exception $e) {
                // The database itself failed: the whole call fails, so the caller retries.
                self::rollback($tx, $e);
                throw $e;
            } catch (\moodle_exception $e) {
                self::rollback($tx, $e);
                $result = self::held('Moodle refused it: ' . $e->getMessage());
            }
            $result['ref'] = $r['ref'];
            $out[] = $result;
        }
        // Course completion, as Moodle reviews it after a single change: the activity
        // criteria met (with the activities' own times) and the course aggregated.
        foreach (self::$touched as [$userid, $courseid]) {
            $id = \core_completion\api::mark_course_completions_activity_criteria(
                ['userid' => $userid, 'courseid' => $courseid]);
            if ($id) {
                aggregate_completions($id);
            }
        }
        self::$touched = [];
        return $out;
    }

    /**
     * Rolls a transaction back without rethrowing.
     *
     * @param \moodle_transaction $tx
     * @param \Throwable $e
     */
    private static function rollback(\moodle_transaction $tx, \Throwable $e): void {
        try {
            $tx->rollback($e);
        } catch (\Throwable $ignored) {
            // Rollback rethrows the exception it was given; the caller decides.
            unset($ignored);
        }
    }

    /**
     * An outcome.
     *
     * @param string $outcome
     * @param string $detail
     * @param string $cloudvalue
     * @param int $cloudtime
     * @return array
     */
    private static function result(string $outcome, string $detail, string $cloudvalue = '', int $cloudtime = 0): array {
        return ['outcome' => $outcome, 'detail' => $detail, 'cloudvalue' => $cloudvalue, 'cloudtime' => $cloudtime];
    }

    /**
     * A held record.
     *
     * @param string $why
     * @return array
     */
    private static function held(string $why): array {
        return self::result('held', $why);
    }

    /**
     * Newer wins: apply, tie or older, for a record of time $time against the value $current
     * held here since $cloudtime. While this Moodle still holds what the caller last wrote
     * (and has not changed it since), that value's own progress time counts.
     *
     * @param int $time
     * @param bool $holdsknown this Moodle holds the caller's last written value
     * @param int $cloudtime
     * @param array $r the record
     * @return string
     */
    public static function decide(int $time, bool $holdsknown, int $cloudtime, array $r): string {
        $baseline = $cloudtime;
        if ($holdsknown && $cloudtime <= $r['knownwritten'] + 5) {
            $baseline = (int) $r['knowntime'];
        }
        if ($time > $baseline) {
            return 'apply';
        }
        return $time == $baseline ? 'tie' : 'older';
    }

    /**
     * Why a record newer-wins did not apply.
     *
     * @param string $decision tie or older
     * @param string $current
     * @param int $cloudtime
     * @param string $value the value held here
     * @return array
     */
    private static function conflict(string $decision, string $current, int $cloudtime, string $value): array {
        $detail = $decision === 'tie'
            ? "the cloud holds $current from the same second; the cloud's value is kept"
            : "the cloud holds $current, newer (since $cloudtime); the cloud's value is kept";
        return self::result($decision, $detail, $value, $cloudtime);
    }

    /**
     * One record.
     *
     * @param array $r
     * @param resolver $resolver
     * @return array
     */
    private static function apply_one(array $r, resolver $resolver): array {
        global $DB, $USER;
        $course = $resolver->course($r['course']);
        if (!$course) {
            return self::held("no course {$r['course']} on the cloud Moodle (by idnumber or shortname)");
        }
        $cm = $course->activities[$r['activity']] ?? null;
        if (!$cm) {
            return self::held("no activity {$r['activity']} in course {$r['course']} on the cloud Moodle");
        }
        $user = $resolver->user($r['user']);
        if (!$user) {
            return self::held("no learner {$r['user']} on the cloud Moodle (by idnumber or username)");
        }
        if (!$resolver->enrolled((int) $user->id, (int) $course->id)) {
            return self::held("learner {$r['user']} is not enrolled in {$r['course']} on the cloud Moodle");
        }
        $time = (int) $r['time'];
        if ($r['kind'] === 'completion') {
            if ($r['value'] !== '0' && $r['value'] !== '1') {
                return self::held("not a completion state: {$r['value']}");
            }
            $wanted = (int) $r['value'];
            $completion = new \completion_info($course);
            if (!$completion->is_enabled($cm)) {
                return self::held("completion tracking is off for {$r['activity']} in {$r['course']} on the cloud Moodle");
            }
            // The stored row, read directly: completion_info::get_data() would build the
            // course's module info for every learner (cm_info::create for another user), which
            // is most of the cost of a record.
            $data = $DB->get_record('course_modules_completion',
                ['coursemoduleid' => $cm->id, 'userid' => $user->id]) ?: (object) [
                    'id' => 0, 'coursemoduleid' => $cm->id, 'userid' => (int) $user->id,
                    'completionstate' => COMPLETION_INCOMPLETE, 'overrideby' => null, 'timemodified' => 0,
                ];
            $data->viewed = $DB->record_exists('course_modules_viewed',
                ['coursemoduleid' => $cm->id, 'userid' => $user->id]) ? 1 : 0;
            $state = (int) $data->completionstate;
            $current = $state == COMPLETION_COMPLETE_PASS ? COMPLETION_COMPLETE : $state;
            $cloudtime = (int) $data->timemodified;
            if ($current == $wanted) {
                return self::result('already', 'the cloud holds this state', (string) $current, $cloudtime);
            }
            $holdsknown = $r['knownvalue'] !== '' && $r['knownvalue'] === (string) $current;
            $decision = self::decide($time, $holdsknown, $cloudtime, $r);
            if ($decision !== 'apply') {
                return self::conflict($decision, "state $current", $cloudtime, (string) $current);
            }
            \core_courseformat\base::session_cache_reset($course);
            $data->completionstate = $wanted;
            $data->timemodified = $time;
            $data->overrideby = $USER->id;
            // Moodle's bulk form of the write (the row, the viewed flag and the learner's
            // completion cache); the event follows here, and course completion once per learner
            // and course at the end of the call (see execute()), instead of once per record.
            $completion->internal_set_data($cm, $data, true);
            $event = \core\event\course_module_completion_updated::create([
                'objectid' => $data->id,
                'context' => \context_module::instance($cm->id),
                'relateduserid' => $user->id,
                'other' => [
                    'relateduserid' => $user->id,
                    'overrideby' => $data->overrideby,
                    'completionstate' => $data->completionstate,
                ],
            ]);
            $event->add_record_snapshot('course_modules_completion', $data);
            $event->trigger();
            self::$touched[$user->id . ':' . $course->id] = [(int) $user->id, (int) $course->id];
            self::note($r, $course, $cm, $user, (string) $wanted);
            return self::result('applied', 'completion set with its original time', (string) $wanted, $time);
        }
        if ($r['kind'] !== 'grade') {
            return self::held("not a kind this plugin applies: {$r['kind']}");
        }
        if (!is_numeric($r['value'])) {
            return self::held("not a grade: {$r['value']}");
        }
        $wanted = (float) $r['value'];
        $item = \grade_item::fetch(['itemtype' => 'mod', 'itemmodule' => $cm->modname,
            'iteminstance' => $cm->instance, 'itemnumber' => 0, 'courseid' => $course->id]);
        if (!$item) {
            return self::held("{$r['activity']} in {$r['course']} has no grade item on the cloud Moodle");
        }
        $grade = \grade_grade::fetch(['itemid' => $item->id, 'userid' => $user->id]);
        $raw = ($grade && $grade->rawgrade !== null) ? (float) $grade->rawgrade : null;
        $cloudtime = $grade ? (int) $grade->timemodified : 0;
        $shown = $raw === null ? '' : sprintf('%.5f', $raw);
        if ($raw !== null && abs($raw - $wanted) < 0.00001) {
            return self::result('already', 'the cloud holds this grade', $shown, $cloudtime);
        }
        $holdsknown = $raw !== null && is_numeric($r['knownvalue']) && abs((float) $r['knownvalue'] - $raw) < 0.00001;
        $decision = self::decide($time, $holdsknown, $cloudtime, $r);
        if ($decision !== 'apply') {
            return self::conflict($decision, "grade $shown", $cloudtime, $shown);
        }
        $status = grade_update('local/vesselsync', $course->id, 'mod', $cm->modname, $cm->instance, 0,
            ['userid' => $user->id, 'rawgrade' => $wanted, 'dategraded' => $time, 'datesubmitted' => $time,
             'usermodified' => $USER->id]);
        if ($status != GRADE_UPDATE_OK) {
            return self::held("the cloud Moodle did not take the grade (grade_update returned $status; is the grade item locked?)");
        }
        self::note($r, $course, $cm, $user, $r['value']);
        return self::result('applied', 'grade set with its original time', $r['value'], $time);
    }

    /**
     * Keeps where an applied record came from, its original time and who applied it.
     *
     * @param array $r
     * @param \stdClass $course
     * @param \cm_info $cm
     * @param \stdClass $user
     * @param string $value
     */
    private static function note(array $r, \stdClass $course, \cm_info $cm, \stdClass $user, string $value): void {
        global $DB, $USER;
        $DB->insert_record('local_vesselsync_applied', (object) [
            'kind' => $r['kind'],
            'courseid' => $course->id,
            'cmid' => $cm->id,
            'userid' => $user->id,
            'value' => \core_text::substr($value, 0, 40),
            'timeoriginal' => (int) $r['time'],
            'source' => \core_text::substr($r['source'], 0, 64),
            'actor' => \core_text::substr($r['actor'], 0, 100),
            'appliedby' => $USER->id,
            'timeapplied' => time(),
        ]);
    }

    /**
     * One outcome per record.
     *
     * @return external_multiple_structure
     */
    public static function execute_returns(): external_multiple_structure {
        return new external_multiple_structure(new external_single_structure([
            'ref' => new external_value(PARAM_ALPHANUMEXT, 'The caller\'s reference'),
            'outcome' => new external_value(PARAM_ALPHA, 'applied, already, older, tie or held'),
            'detail' => new external_value(PARAM_RAW, 'Why, in words'),
            'cloudvalue' => new external_value(PARAM_RAW, 'The value this Moodle holds now for the key'),
            'cloudtime' => new external_value(PARAM_INT, 'Since when'),
        ]));
    }
}
