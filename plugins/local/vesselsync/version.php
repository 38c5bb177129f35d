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

/**
 * Version details of local_vesselsync.
 *
 * @package    local_vesselsync
 * @copyright  2026 vessel-sync
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'local_vesselsync';
$plugin->version   = 2026120701;
$plugin->requires  = 2024100700; // Moodle 4.5 LTS.
$plugin->supported = [405, 500];
$plugin->maturity  = MATURITY_STABLE;
$plugin->release   = '1.0.0';
